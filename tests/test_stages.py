"""The stage chain: method names and '+'-spelled chains, user chains,
`replay_iters`, `eval_protocol`, and the bad inputs of all of them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import rar_jax
from rar_jax.core import buffer, stages
from rar_jax.core.method import METHODS, STAGES
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import experiment
from rar_jax.runner.config import base_config

C = 4


def _parts(method, **kw):
  module = rar_jax.MLP(C, hidden=(16,))
  cfg, chain = rar_jax.build_method(method, num_classes=C, mem_size=20, batch_size_mem=5, **kw)
  tx = rar_jax.make_optimizer(0.1)
  hyper = rar_jax.Hyper.create(opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, iter_fgsm=3)
  return module, cfg, chain, tx, hyper


def _stream():
  rng = np.random.default_rng(0)
  centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(C, 16))
  y = np.r_[np.tile([0, 1], 15), np.tile([2, 3], 10)]
  x = np.clip(centers[y] + 0.05 * rng.normal(size=(50, 16)), 0, 1).reshape(50, 4, 4, 1)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def _train(method, chain=None, **kw):
  module, cfg, method_chain, tx, hyper = _parts(method, **kw)
  x, y = _stream()
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x[:10])
  step = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain or method_chain))
  for i in range(0, 50, 10):
    state, m = step(state, x[i : i + 10], y[i : i + 10])
  return state, m


def _equal(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_name_is_its_stage_list(name):
  chain = stages.from_method(name)
  names = tuple(s.name for s in (chain.retrieve, chain.mix, chain.perturb) if s is not None)
  loss = chain.loss.name
  assert names + ((loss,) if loss != "ce" else ()) == METHODS[name]
  if METHODS[name]:  # the '+' spelling names the same chain
    other = stages.from_method("+".join(METHODS[name]))
    assert [s.name for s in other.stages] == [s.name for s in chain.stages]


def test_a_user_chain_of_builtin_stages_is_the_named_method_bit_for_bit():
  chain = stages.chain(stages.rar(), stages.random_replay())  # any order
  _equal(_train("er", chain=chain)[0].params, _train("er_rar")[0].params)


@pytest.mark.parametrize("method", ["er_rar", "mir_rar", "aser_rar"])
def test_every_retrieval_stage_keeps_the_current_labels_out_of_replay(method):
  # CE's replay rule (the paper's code): no replay row shares a label with the
  # incoming batch, whichever stage draws the rows.
  kw = dict(mir_candidates=10, aser_candidates=10, aser_coop_size=10)
  state, _ = _train(method, **kw)
  held = np.asarray(state.buffer.y)[: int(state.buffer.size)]
  assert set(held.tolist()) == {0, 1, 2, 3}
  module, cfg, chain, tx, _ = _parts(method, **kw)
  x, _ = _stream()
  x_in, y_in = x[20:30], jnp.asarray([0] * 5 + [2] * 5, jnp.int32)  # incoming labels 0 and 2
  preview = jax.jit(rar_jax.core.step.make_rar_preview(module, tx, cfg, chain))
  for seed in range(5):
    out = jax.device_get(preview(state, x_in, y_in, jax.random.PRNGKey(seed)))
    labels = np.argmax(out["targets"], -1)[out["mask"]]
    assert len(labels) > 0 and set(labels.tolist()) <= {1, 3}, (seed, labels)


def test_rar_on_a_user_written_retrieval():
  calls = []

  def newest_first(ctx, key):  # replay the most recently stored eligible rows
    calls.append(1)
    del key
    buf, n = ctx.buffer, ctx.cfg.batch_size_mem
    held = (jnp.arange(buf.y.shape[0]) < buf.size) & ~jnp.isin(buf.y, ctx.exclude)
    _, idx = jax.lax.top_k(jnp.where(held, jnp.arange(buf.y.shape[0]), -1), n)
    return buf.x[idx], buf.y[idx], held[idx]

  chain = stages.chain(stages.retrieve(newest_first), stages.rar())
  state, m = _train("er", chain=chain)
  assert calls and int(m["replay_count"]) == 5 and float(m["perturbation_max"]) > 0
  assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree.leaves(state.params))


@pytest.mark.slow
def test_replay_iters_repeats_the_update_with_fresh_draws_and_inserts_once():
  module, cfg, chain, tx, hyper = _parts("er", replay_iters=2)
  x, y = _stream()
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x[:10])
  step = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
  for i in range(0, 30, 10):
    state, _ = step(state, x[i : i + 10], y[i : i + 10])
  xb, yb = x[30:40], y[30:40]
  new, m = step(state, xb, yb)

  _, k_ret, _, _ = jax.random.split(state.key, 4)
  ce = lambda p, z, t: (
    -jnp.mean(jax.nn.log_softmax(module.apply({"params": p}, z))[jnp.arange(t.shape[0]), t])
  )
  params, losses = state.params, []
  for i in range(2):
    xm, ym, mm = buffer.sample(state.buffer, jax.random.fold_in(k_ret, i), 5, yb)
    assert bool(mm.all())
    losses.append((float(ce(params, xb, yb)), float(ce(params, xm, ym))))
    g = jax.grad(lambda p: ce(p, xb, yb) + ce(p, xm, ym))(params)
    params = jax.tree.map(lambda p, gg: p - 0.1 * gg, params, g)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert int(new.buffer.seen) == int(state.buffer.seen) + 10
  # The reported losses are the first update's: the online loss, before any step on x.
  assert losses[0] != losses[1]
  np.testing.assert_allclose([m["loss_current"], m["loss_replay"]], losses[0], rtol=1e-5)


@struct.dataclass
class _Fixed:
  params: dict
  batch_stats: dict


class _Identity(rar_jax.MLP):
  """Logits = the input: an evaluation whose predictions the test sets."""

  def __call__(self, x, train=False):
    return x.reshape(x.shape[0], -1)


def test_task_protocol_masks_the_logits_to_the_sample_task():
  x = jnp.asarray([[5.0, 0, 1, 0], [5.0, 0, 0, 1], [0, 1, 0, 0]])  # class 0 wins overall
  y = jnp.asarray([2, 3, 1])
  task_of_class = jnp.asarray([[0, 0, 1, 1]])
  states = _Fixed(params={}, batch_stats={})
  states = jax.tree.map(lambda a: a[None], states)
  acc = {
    p: np.asarray(
      evaluator_lib.make_evaluator(_Identity(C), 2, chunk=4, eval_protocol=p)(
        states, x, y, task_of_class
      )
    )[0]
    for p in ("class", "task")
  }
  np.testing.assert_array_equal(acc["class"], [1.0, 0.0])
  np.testing.assert_array_equal(acc["task"], [1.0, 1.0])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
  "method,fragments",
  [
    ("random+foo", ["'random+foo'", "unknown stage 'foo'", "retrieve: random|mir|aser"]),
    ("rar+random", ["'rar+random'", "order retrieve, mix, perturb, loss"]),
    ("random+mir", ["at most one stage of each kind"]),
    ("mixup+rar", ["need a retrieve stage"]),
    ("sgd", ["method='sgd'", "er_rar", "aser_rar", "er_ace"]),
  ],
)
def test_unknown_or_misordered_stages_are_named(method, fragments):
  with pytest.raises(ValueError) as e:
    rar_jax.build_method(method, num_classes=C)
  for f in fragments:
    assert f in str(e.value), str(e.value)


def test_chain_rejects_two_stages_of_a_kind_and_non_stages():
  with pytest.raises(ValueError, match="two loss stages"):
    stages.chain(stages.ce(), stages.ace())
  with pytest.raises(ValueError, match="not a stage"):
    stages.chain(lambda ctx, key: None)
  with pytest.raises(ValueError, match="need a retrieve stage"):
    stages.chain(stages.rar())
  with pytest.raises(ValueError, match="stage 'foo' is invalid"):
    stages.by_name("foo")
  assert set(STAGES) == {"random", "mir", "aser", "mixup", "rar", "ce", "ace"}


BAD = [
  (dict(methods="er_rar", replay_iters=0), ["replay_iters=0", ">= 1"]),
  (dict(methods="aser", aser_k=60), ["aser_k=60", "aser_candidates=50"]),
  (dict(methods="aser", aser_candidates=300), ["aser_candidates=300", "mem_size=200"]),
  (dict(methods="aser", aser_coop_size=0), ["aser_coop_size=0", "mem_size=200"]),
  (dict(methods="aser", aser_type="sv"), ["aser_type='sv'", "asvm"]),
  (dict(methods="aser_rar", attack_params="theta"), ["attack_params='theta'", "lookahead"]),
  (dict(methods="random+bogus"), ["unknown stage 'bogus'"]),
  (dict(eval_protocol="domain"), ["eval_protocol='domain'", "task"]),
  (dict(matmul_precision="fp8"), ["matmul_precision='fp8'", "float32"]),
  (dict(eval_classifier="knn"), ["eval_classifier='knn'", "ncm"]),
]


@pytest.mark.parametrize(
  "overrides,fragments", BAD, ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD]
)
def test_bad_config_is_one_line_naming_the_key(overrides, fragments):
  config = base_config()
  config.update(overrides)
  with pytest.raises(experiment.ConfigError) as e:
    experiment.validate_config(config)
  assert "\n" not in str(e.value)
  for f in fragments:
    assert f in str(e.value), str(e.value)


def test_new_methods_and_keys_validate():
  config = base_config()
  config.update(
    methods="aser_rar,er_ace_rar,aser+mixup+rar+ace",
    replay_iters=3,
    eval_protocol="task",
    eval_classifier="ncm",
    matmul_precision="float32",
    exclude_current_labels=False,
  )
  experiment.validate_config(config)


@pytest.mark.parametrize("epsilon, steps", [(0.3, 5), (0.1, 2), (0.05, 1)])
def test_the_default_attack_step_is_epsilon_over_the_steps(epsilon, steps):
  """``alpha_fgsm`` unset: each of the ``iter_fgsm`` sign steps moves a pixel by
  epsilon / steps (Avalanche's and the docs' default), in the traced settings a
  chain starts from, in a config's run plan and in `Hyper.create`."""
  want = epsilon / steps
  _, chain = rar_jax.build_method("er_rar", 10, epsilon_fgsm=epsilon, iter_fgsm=steps)
  assert float(chain.hyper(0.1).alpha_fgsm) == pytest.approx(want)
  hyper = rar_jax.Hyper.create(opt_lr=0.1, epsilon_fgsm=epsilon, iter_fgsm=steps)
  assert float(hyper.alpha_fgsm) == pytest.approx(want)
  config = base_config()
  config.update(epsilon_fgsm=epsilon, iter_fgsm=steps)
  from rar_jax.runner.config import replay_parts

  assert float(replay_parts(config, "er_rar", 10)[2].alpha_fgsm) == pytest.approx(want)
