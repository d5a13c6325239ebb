r"""Every figure of Kingma & Welling (2013) Sec. 5 at one scale, timed.

  python experiments/aevb/run_all.py --scale=quick [--data_dir=../shared/data]

Runs Figures 4 and 5 first (their runs are shared with Figure 2 where the
settings coincide), then 2 and 3, and writes timings.json to --out.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import fig2_lower_bound  # noqa: E402
import fig3_marginal_likelihood  # noqa: E402
import fig4_manifold  # noqa: E402
import fig5_samples  # noqa: E402

from vae_jax import cli  # noqa: E402

FIGURES = {
    'fig4': fig4_manifold,
    'fig5': fig5_samples,
    'fig2': fig2_lower_bound,
    'fig3': fig3_marginal_likelihood,
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    args = common.parse_args(__doc__.splitlines()[0], argv)
    timings = {}
    t_all = time.perf_counter()
    for name, module in FIGURES.items():
        t0 = time.perf_counter()
        module.main(argv)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f'{name}: {timings[name]} s', flush=True)
    timings['total'] = round(time.perf_counter() - t_all, 1)
    timings['cpu_count'] = os.cpu_count()
    with open(os.path.join(args.out, 'timings.json'), 'w') as f:
        json.dump(timings, f, indent=2)
    print(json.dumps(timings))
    return timings


if __name__ == '__main__':
    cli.run_script(main)
