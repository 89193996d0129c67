"""Write random-weight checkpoints of the base-960h and lv60 architectures (HF layout).

`python -m bench.make_checkpoints bench/checkpoints` gives bench/checkpoints/{base,lv60}/ with
config.json and model.safetensors that our model, transformers (PyTorch) and transformers 4.57's
TF model all load, so that every peer runs the same weights. Architecture names after the folder
write only those (`python -m bench.make_checkpoints bench/checkpoints base`). Where TensorFlow is
not installed (the GPU machine) the Flax model draws the weights instead.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

from bench.architectures import ARCHITECTURES
from wav2vec2_beam.models import Wav2Vec2Config

#: The facebook/wav2vec2-base-960h tokenizer and preprocessor files, as the fixtures hold them.
TOKENIZER = Path(__file__).resolve().parents[1] / "tests/fixtures/checkpoints/tokenizer_base960h"


def main(out_dir: str, names: list[str] | None = None) -> None:
    for name, raw in ARCHITECTURES.items():
        if names and name not in names:
            continue
        target = Path(out_dir) / name
        if not (target / "model.safetensors").exists():
            if importlib.util.find_spec("tensorflow") is not None:
                from wav2vec2_beam.models import TFWav2Vec2ForCTC as model_class
            else:
                from wav2vec2_beam.models import FlaxWav2Vec2ForCTC as model_class
            model = model_class(Wav2Vec2Config.from_dict(raw), seed=0)
            model.save_pretrained(str(target))
            print(f"wrote {target}")
        for file in TOKENIZER.iterdir():
            shutil.copy(file, target / file.name)
        preprocessor = json.loads((target / "preprocessor_config.json").read_text())
        # lv60 checkpoints are used with an attention mask, base-960h without (as on the hub).
        preprocessor["return_attention_mask"] = bool(raw["feat_extract_norm"] == "layer")
        (target / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/checkpoints", sys.argv[2:])
