"""Shared pytest setup for vae_jax.

Strict rank promotion as in equinox's ``tests/conftest.py``: an implicit
broadcast between arrays of different rank (``[B, D] + [S, B, D]``) raises, so
shape bugs surface as errors rather than as silently broadcast numbers. 64-bit
is off: the library runs in float32, and a test that needs float64 for a tight
comparison enables it locally with ``jax.enable_x64()``.

The test programs are tiny, so XLA's CPU backend optimisation is turned down
(``--xla_backend_optimization_level=0``) unless XLA_FLAGS already sets it:
compiles are ~5x faster and dominate the run time; execution is ~2x slower.
"""

import os
from pathlib import Path

if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (
        os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0'
    ).strip()

import jax  # noqa: E402  (XLA_FLAGS must be set before the backend starts)
import pytest  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_enable_x64', False)


@pytest.fixture(autouse=True)
def _strict_numerics():
    """Re-assert the settings for every test, in case an earlier test changed them."""
    jax.config.update('jax_numpy_rank_promotion', 'raise')
    jax.config.update('jax_enable_x64', False)
    yield


@pytest.fixture
def shared_data_dir() -> Path:
    """``<repo>/../shared/data``, or skip the test when that folder is absent."""
    path = Path(__file__).resolve().parents[2] / 'shared' / 'data'
    if not path.is_dir():
        pytest.skip(
            '../shared/data not found: the tests that read real datasets need it; see README'
        )
    return path


# ----------------------------------------------------------------------------
# Probabilistic PCA: a linear-Gaussian VAE whose log p(x) and posterior are exact.


class PPCA:
    """p(z) = N(0, I), p(x|z) = N(W z + b, s2 I), so p(x) = N(b, W W^T + s2 I).

    W has orthogonal columns, so the exact posterior
    N(Sigma W^T (x - b) / s2, Sigma) with Sigma = (I + W^T W / s2)^-1 is
    diagonal and a diagonal-Gaussian encoder can represent it.
    Arrays are float32; ``log_px`` is computed in float64 by scipy.
    """

    x_dim, z_dim, batch = 4, 2, 3
    s2 = 0.5

    def __init__(self, seed: int = 0):
        import numpy as np
        from scipy import stats

        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((self.x_dim, self.z_dim)))
        self.w = (q * np.array([1.5, 0.8])).astype(np.float32)  # orthogonal columns
        self.b = rng.standard_normal(self.x_dim).astype(np.float32)
        z = rng.standard_normal((self.batch, self.z_dim))
        noise = np.sqrt(self.s2) * rng.standard_normal((self.batch, self.x_dim))
        self.x = (z @ self.w.T + self.b + noise).astype(np.float32)
        w64 = self.w.astype(np.float64)
        cov = w64 @ w64.T + self.s2 * np.eye(self.x_dim)
        self.log_px = stats.multivariate_normal(self.b, cov).logpdf(self.x.astype(np.float64))
        self.post_var = (1.0 / (1.0 + np.sum(w64**2, axis=0) / self.s2)).astype(np.float32)
        self.post_mean = ((self.x - self.b) @ self.w * self.post_var / self.s2).astype(np.float32)

    def exact_encode(self, x):
        """The exact posterior (for ``x`` equal to ``self.x``-shaped data)."""
        import jax.numpy as jnp

        mean = (x - jnp.broadcast_to(self.b, x.shape)) @ self.w
        mean = mean * jnp.broadcast_to(self.post_var / self.s2, mean.shape)
        return mean, jnp.broadcast_to(jnp.log(self.post_var), mean.shape)

    def perturbed_encode(self, x):
        """The exact posterior with mean shifted by 0.4 and log-variance raised by 0.6."""
        mean, log_var = self.exact_encode(x)
        return mean + 0.4, log_var + 0.6

    def model(self, encode=None):
        """The model as ``objectives.LatentModel``: this p(x, z) and q(z|x) = ``encode``'s
        (default the exact posterior)."""
        from vae_jax import objectives

        return objectives.gaussian_latent_model(
            encode or self.exact_encode, self.decode, self.z_dim
        )

    def decode(self, z):
        """``z`` ``[..., B, Dz]`` -> p(x|z), a ``DiagonalGaussian`` of ``[..., B, Dx]``."""
        import jax.numpy as jnp

        from vae_jax import likelihoods

        mean = jnp.einsum('...k,dk->...d', z, self.w)
        mean = mean + jnp.broadcast_to(self.b, mean.shape)
        log_var = jnp.full(mean.shape, jnp.log(self.s2), mean.dtype)
        return likelihoods.DiagonalGaussian(mean, log_var, event_ndim=1)


@pytest.fixture(scope='session')
def ppca() -> PPCA:
    return PPCA()
