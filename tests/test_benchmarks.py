"""The benchmark scripts run and print what benchmarks/README.md says (figures not checked)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from experiments.iwae import table1

BENCHMARKS = Path(__file__).resolve().parent.parent / 'benchmarks'

# Analytic matmul FLOPs of one step of the 784-400-20 MLP at batch 128: forward and
# weight gradients of every layer, input gradients of all but the first (x is data).
_LAYER_MACS = 784 * 400 + 400 * 2 * 20 + 20 * 400 + 400 * 784
_MATMUL_FLOPS = 2 * 128 * (2 * _LAYER_MACS + (_LAYER_MACS - 784 * 400))


def _last_json(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sweep_throughput_prints_times_speedup_and_compute_ceiling():
    r = _last_json(
        'sweep_throughput.py', '--points=2', '--steps=20', '--steps_per_dispatch=10',
        '--num_train=1000',
    )  # fmt: skip
    assert r['num_points'] == 2 and r['num_steps'] == 20
    assert r['speedup'] == pytest.approx(r['sequential_seconds'] / r['vectorised_seconds'], 1e-2)
    # XLA's count covers the products plus the element-wise work (softplus, Adam).
    assert _MATMUL_FLOPS <= r['step_flops'] <= 1.2 * _MATMUL_FLOPS
    assert r['compute_bound_seconds'] == pytest.approx(
        r['step_flops'] * 2 * 20 / (r['peak_matmul_gflops'] * 1e9), 1e-2
    )
    assert r['max_speedup'] == pytest.approx(
        r['sequential_seconds'] / r['compute_bound_seconds'], 1e-2
    )
    assert math.isfinite(r['final_objective_mean'])


def test_train_throughput_prints_examples_per_second():
    r = _last_json(
        'train_throughput.py', '--steps=20', '--warmup=10', '--repeats=1', '--rounds=1',
        '--steps_per_dispatch=10',
    )  # fmt: skip
    assert r['examples_per_sec'] > 0 and len(r['examples_per_sec_runs']) == 1
    assert r['ms_per_step'] == pytest.approx(1e3 * 128 / r['examples_per_sec'], 1e-2)
    assert math.isfinite(r['final_loss_per_example'])


def test_eval_throughput_prints_ratio_to_matmul_floor():
    r = _last_json('eval_throughput.py', '--num_examples=200', '--num_samples=50')
    assert r['decoder_tflops'] == pytest.approx(2 * 200 * 50 * (20 * 400 + 400 * 784) / 1e12)
    assert r['ratio_to_matmul'] == pytest.approx(r['seconds'] / r['matmul_seconds'], 1e-3)
    assert r['mean_log_px'] < 0


def test_paper_settings_prints_a_rate_for_each_run_named():
    if not (SHARED_DATA / 'mnist').is_dir():
        pytest.skip(f'{SHARED_DATA}/mnist not found: the paper settings train on MNIST')
    names = ['fig3_n1000_wake_sleep', 'fig3_n1000_mcem', 'fig3_n1000_wake_sleep']  # may repeat
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'paper_settings.py'), f'--data_dir={SHARED_DATA}',
         f'--only={",".join(names)}', '--steps_scale=0.002'],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
    assert [r['run'] for r in lines] == names
    for r in lines:
        assert r['steps'] >= 3 and r['examples_per_sec'] > 0
        assert r['steps_per_sec'] == pytest.approx(r['examples_per_sec'] / r['batch'], 1e-2)
        assert r['paper_schedule_hours'] == pytest.approx(
            r['paper_steps'] / r['steps_per_sec'] / 3600, 1e-2
        )


def _paper_settings_module():
    path = BENCHMARKS / 'paper_settings.py'
    spec = importlib.util.spec_from_file_location('paper_settings', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_settings_times_every_table1_model_with_the_tables_settings():
    bench = _paper_settings_module()
    timed = {name for name in bench.RUNS if name.startswith('iwae_')}
    models = table1.all_models()
    assert timed == {'iwae_' + table1.model_name(*m) for m in models}
    for layers, objective, k in models:
        config = bench.RUNS['iwae_' + table1.model_name(layers, objective, k)][0]()
        table = table1.model_config(layers, objective, k, table1.SCALES['paper'], config.data_dir)
        for field in ('model', 'optimizer', 'objective', 'num_samples', 'batch_size',
                      'latent_dim', 'binarization', 'num_steps', 'kl_estimator'):  # fmt: skip
            assert config[field] == table[field], (layers, objective, k, field)
    assert bench._expand(['iwae_l2_*k50', 'fig2_z20_aevb', 'nope_*']) == [
        'iwae_l2_vae_k50', 'iwae_l2_iwae_k50', 'fig2_z20_aevb', 'nope_*'
    ]  # fmt: skip
