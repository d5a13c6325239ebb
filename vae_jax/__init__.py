"""vae_jax: variational autoencoders in JAX/Flax (Kingma & Welling, 2013, and follow-ups)."""
