"""Write random-weight checkpoints of the base-960h and lv60 architectures (HF layout).

`python -m bench.make_checkpoints bench/checkpoints` gives bench/checkpoints/{base,lv60}/ with
config.json and model.safetensors that our model, transformers (PyTorch) and transformers 4.57's
TF model all load, so that every peer runs the same weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.architectures import ARCHITECTURES
from models import TFWav2Vec2ForCTC, Wav2Vec2Config


def main(out_dir: str) -> None:
    for name, raw in ARCHITECTURES.items():
        target = Path(out_dir) / name
        if (target / "model.safetensors").exists():
            continue
        model = TFWav2Vec2ForCTC(Wav2Vec2Config.from_dict(raw), seed=0)
        model.save_pretrained(str(target))
        print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/checkpoints")
