"""The demo model's own world: its sentence generator and speech, its training, its LM, its
evaluation. Not needed to run the pipeline; `models/` knows nothing of it."""
