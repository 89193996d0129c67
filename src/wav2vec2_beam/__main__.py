"""`python -m wav2vec2_beam`: the same command as the console script `wav2vec2-beam`."""

from wav2vec2_beam.pipeline.main import cli

if __name__ == "__main__":
    cli()
