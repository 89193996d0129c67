"""What crosses a shuffle on Dataflow, per hour of audio, read off the translated job graph.

    python -m bench.shuffle_bytes

1. Builds the Dataflow job for `run_dataflow.sh`'s flags with `--dry_run=True` (translated, not
   submitted), for transcripts only and for every hidden state, and lists each GroupByKey (the
   shuffles; a Reshuffle is one too), with whether RunInference is upstream of it.
2. Encodes what each of those moves with the coder Dataflow uses for it (these PCollections have
   no type hints, so Beam's pickling `FastPrimitivesCoder`), for 10 s utterances, and scales it
   to one hour of audio.

Prints one JSON object. Run it on an older commit to see what crossed a shuffle there.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import soundfile
from apache_beam.portability import common_urns

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixtures.synthetic_audio import synthetic_speech  # noqa: E402

UTTERANCE_S = 10.0
RATE = 16_000
FRAMES = int(UTTERANCE_S * 50) - 1  # the base model's frames for 10 s
FLAGS = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
    "--input=gs://my-bucket/corpus/**.flac",
    "--output_dir=gs://my-bucket/out",
    f"--model_dir={REPO / 'tests' / 'fixtures' / 'checkpoints' / 'base'}",
    "--dry_run=True",
]
RUNS = {
    "transcripts": [],
    "every layer": ["--outputs=transcripts,hidden_states", "--hidden_layers=all"],
}


def grouping_steps(extra: list[str]) -> list[dict]:
    """Each grouping transform of the translated job, and whether the model runs before it."""
    from wav2vec2_beam.models.configuration import Wav2Vec2Config
    from wav2vec2_beam.pipeline.graph import build_pipeline
    from wav2vec2_beam.pipeline.main import make_pipeline
    from wav2vec2_beam.pipeline.options import check_against_model, parse_args

    options, config = parse_args([*FLAGS, *extra])
    model = Wav2Vec2Config.from_pretrained(config.model_dir)
    pipeline, _ = make_pipeline(options)
    build_pipeline(pipeline, config, model, check_against_model(config, model), "bench")
    components = pipeline.run().job.proto_pipeline.components
    transforms = components.transforms
    producer = {pc: tid for tid, t in transforms.items() for pc in t.outputs.values()}
    steps = []
    for transform in transforms.values():
        if transform.spec.urn != common_urns.primitives.GROUP_BY_KEY.urn:
            continue
        upstream, frontier = set(), list(transform.inputs.values())
        while frontier:
            tid = producer.get(frontier.pop())
            if tid and tid not in upstream:
                upstream.add(tid)
                frontier.extend(transforms[tid].inputs.values())
        names = {transforms[t].unique_name for t in upstream}
        after_model = any(n.split("/")[0] == "RunInference" for n in names)
        steps.append({"step": transform.unique_name, "after_model": after_model})
    return sorted(steps, key=lambda step: step["step"])


def encoded_bytes(element: object) -> int:
    return len(beam.coders.FastPrimitivesCoder().encode(element))


def per_hour() -> dict[str, float]:
    """MB per hour of audio of each kind of element a shuffle could move (10 s utterances)."""
    from wav2vec2_beam.transforms.read.decode_items import AudioItem
    from wav2vec2_beam.transforms.records import AudioChunk, InferredChunk

    per_hour_factor = 3600 / UTTERANCE_S / 1e6
    speech = synthetic_speech(UTTERANCE_S, seed=0)
    flac = io.BytesIO()
    soundfile.write(flac, speech, RATE, format="FLAC")
    path = "gs://my-bucket/corpus/LibriSpeech/train-clean-100/103/1240/103-1240-0000.flac"
    window = AudioChunk(path, path, 0, True, speech.astype(np.float32), 0, 0, RATE, len(speech))

    def outputs(layers: int) -> InferredChunk:
        frames = {"ctc_ids": np.zeros(FRAMES, np.int32), "ctc_confidence": np.ones(FRAMES, "f4")}
        for layer in range(layers):
            frames[f"hidden_state_{layer}"] = np.ones((FRAMES, 768), np.float32)
        return InferredChunk(path, path, 0, True, 0, 0, len(speech), len(speech), {}, frames)

    elements = {
        "work unit: a file's path (AudioItem)": AudioItem(path, path, path=path),
        "work unit: an utterance's FLAC bytes (AudioItem)": AudioItem(
            f"{path}#k", path, data=flac.getvalue()
        ),
        "audio window, float32 samples (AudioChunk)": window,
        "model outputs, transcripts only (InferredChunk)": outputs(0),
        "model outputs, 13 layers of base (InferredChunk)": outputs(13),
    }
    return {name: round(encoded_bytes(e) * per_hour_factor, 3) for name, e in elements.items()}


def main() -> None:
    report = {
        "graph": {run: grouping_steps(extra) for run, extra in RUNS.items()},
        "mb_per_hour_of_audio": per_hour(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
