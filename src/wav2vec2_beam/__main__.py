"""`python -m wav2vec2_beam` and the console script `wav2vec2-beam`: the command of
`wav2vec2_beam.pipeline.main`, started without the cyclic garbage collector.

Importing Beam and TensorFlow and loading a checkpoint create some 950,000 long-lived objects,
and the collector rescanned them again and again while they were being made: about 1 s of a
9 s start-up (base, 2 vCPUs of a Zen 4). It is off until the model is loaded; then what the
start-up made is frozen out of later collections, and it is on again for the run
(`pipeline.lifecycle.freeze_start_up_objects`).
"""

import gc
from typing import NoReturn


def cli() -> NoReturn:
    gc.disable()  # before the imports below, which are most of the start-up
    from wav2vec2_beam.pipeline.main import cli as command

    command()


if __name__ == "__main__":
    cli()
