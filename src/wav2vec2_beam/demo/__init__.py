"""The demo model's own world: its sentence generator and speech, its training, its LM, its
evaluation, and the sample corpus of `python -m wav2vec2_beam.demo`.

The checkpoint (`MODEL_DIR`, 7 MB) and its held-out speech (`HELDOUT_DIR`, 1 MB) are package
data, so that whoever installs the wheel can run and evaluate the demo without this repository.
Not needed to run the pipeline; `models/` knows nothing of it.
"""

from pathlib import Path

#: The bundled demo checkpoint (Hugging Face layout, with its LM in language_model/).
MODEL_DIR = Path(__file__).with_name("model")
#: Its held-out speech: sentences never heard in training, with transcripts.json.
HELDOUT_DIR = Path(__file__).with_name("heldout")
