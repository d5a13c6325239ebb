"""Image grids of samples, reconstructions and 2-D latent manifolds (PNG)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.scipy.stats import norm

from vae_jax import models


def tile(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, C]`` (or ``[N, D]`` with D a square) -> one image."""
    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f'cannot tile flat images of size {images.shape[1]} (not a square)')
        images = images.reshape(-1, side, side)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = images[i]
    return np.clip(grid[..., 0] if c == 1 else grid, 0.0, 1.0)


def save_grid(path: str, images: np.ndarray, ncols: int | None = None) -> None:
    import matplotlib  # Deferred: matplotlib's import costs about a second.

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    grid = tile(images, ncols)
    scale = 3
    plt.imsave(
        path,
        np.kron(grid, np.ones((scale, scale)) if grid.ndim == 2 else np.ones((scale, scale, 1))),
        cmap='gray',
        vmin=0.0,
        vmax=1.0,
    )


def manifold_latents(n: int, latent_dim: int = 2) -> jax.Array:
    """``[n * n, 2]`` latents on the grid of Gaussian quantiles (the paper's Figure 4).

    Equally spaced points of the unit square pass through the inverse Gaussian CDF,
    so equal areas carry equal prior mass.
    """
    if latent_dim != 2:
        raise ValueError(f'the manifold grid needs latent_dim=2, the model has {latent_dim}')
    u = (np.arange(n) + 0.5) / n
    g = np.asarray(norm.ppf(u))
    # Row r, column c holds z = (g[c], g[n - 1 - r]): z_1 grows rightwards, z_2 upwards.
    zz = np.stack(np.meshgrid(g, g[::-1]), axis=-1).reshape(-1, 2)
    return jnp.asarray(zz, jnp.float32)


def save_sample_and_reconstruction_grids(
    workdir: str,
    model,
    params,
    data: np.ndarray,
    key: jax.Array,
    step: int | None = None,
    num: int = 64,
) -> None:
    """Writes ``samples.png`` (decoder means at z ~ p(z)) and ``reconstructions.png``.

    Reconstructions alternate rows of data and decoder means at the posterior
    mean. With ``step``, the files are also kept as ``samples_<step>.png`` etc.
    """
    z = models.sample_prior(model, params, key, num)
    samples = model.apply({'params': params}, z, method=model.decode).mean()
    x = jnp.asarray(data[:32])
    mean = models.posterior_mean_latents(model, params, x)
    recon = model.apply({'params': params}, mean, method=model.decode).mean()
    ncols = 8
    rows = []
    for r in range(0, x.shape[0], ncols):
        rows += [np.asarray(x[r : r + ncols]), np.asarray(recon[r : r + ncols])]
    pairs = np.concatenate(rows)
    if x.ndim == 2 and math.isqrt(x.shape[1]) ** 2 != x.shape[1]:
        logging.warning('data of shape %s is not an image; no grids drawn', x.shape[1:])
        return
    os.makedirs(os.path.join(workdir, 'images'), exist_ok=True)
    for name, images in (('samples', samples), ('reconstructions', pairs)):
        save_grid(os.path.join(workdir, f'{name}.png'), np.asarray(images), ncols)
        if step is not None:
            save_grid(
                os.path.join(workdir, 'images', f'{name}_{step:08d}.png'), np.asarray(images), ncols
            )


def draw(
    key: jax.Array,
    model,
    params,
    *,
    num: int,
    source: str,
    x: np.ndarray | None = None,
    means: bool = False,
) -> np.ndarray:
    """``[num, *event_shape]`` images from the model: ``source`` is ``'prior'`` (z ~ p(z))
    or ``'posterior'`` (z ~ q(z|x) for random rows of ``x``); then x ~ p(x|z), or E[x|z]
    with ``means``.
    """
    z_key, pick_key, x_key = jax.random.split(key, 3)
    if source == 'prior':
        z = models.sample_prior(model, params, z_key, num)
    else:
        rows = jax.random.choice(pick_key, x.shape[0], (num,), replace=x.shape[0] < num)
        x_rows = jnp.asarray(x[np.asarray(rows)])
        z = models.latent_model(model, params).sample_posterior(z_key, x_rows, None).z
    p_x = model.apply({'params': params}, z, method=model.decode)
    return np.asarray(p_x.mean() if means else p_x.sample(x_key))
