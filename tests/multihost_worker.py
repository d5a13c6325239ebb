"""One process of the two-process test in tests/test_multihost.py (not a test itself).

  python tests/multihost_worker.py PORT PROCESS_ID WORKDIR PARAMS.npz

Joins a 2-process run on 127.0.0.1:PORT, trains the tiny test config data-parallel and
writes this process's final parameters to PARAMS.npz.
"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import jax  # noqa: E402
import numpy as np  # noqa: E402
from helpers import tiny_config  # noqa: E402

from vae_jax import parallel, train  # noqa: E402


def main(port: str, process_id: str, workdir: str, out: str) -> None:
    assert parallel.initialize(f'127.0.0.1:{port}', 2, int(process_id))
    print(f'process {jax.process_index()} of {jax.process_count()}', flush=True)
    config = tiny_config(data_parallel=True)

    def save(state):
        np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(state.params)])

    train.train_and_evaluate(config, workdir, on_trained=save)


if __name__ == '__main__':
    main(*sys.argv[1:])
