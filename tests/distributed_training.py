"""One process of the data-parallel training test (tests/test_multiprocess.py), run as a script.

Trains a small hierarchical LSTM with :func:`dam.training.fit` in float64: with ``--num-processes N > 1`` over
every device of every process (``jax.distributed`` on localhost, CPU collectives), otherwise on one device.
Process 0 writes the trained leaves, the training losses and the epoch the run resumed from to OUTPUT (.npz).

    python tests/distributed_training.py OUT.npz [--coordinator HOST:PORT --num-processes N --process-id K]
        [--checkpoint-dir DIR] [--stop-after EPOCHS]
"""

from __future__ import annotations

import argparse

MEMBERS, STEPS, FEATURES = 13, 20, 3  # 13 members in batches of 5: padded on 2 devices


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    p.add_argument("--coordinator", default=None)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--stop-after", type=int, default=None)
    args = p.parse_args()

    import jax

    from dam.sharding import column_mesh, initialize_distributed

    if args.num_processes > 1:
        initialize_distributed(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np

    from dam.precision import enable_x64
    from dam.surrogates import HierarchicalLSTM
    from dam.training import fit

    enable_x64()
    rng = np.random.default_rng(0)  # every process holds the same data; fit places each its share of a batch
    x = rng.normal(size=(MEMBERS, STEPS, FEATURES))
    y = np.zeros((MEMBERS, STEPS, 3))
    for t in range(1, STEPS):  # a leaky running sum of the first input, weaker with depth
        y[:, t] = 0.9 * y[:, t - 1] + 0.3 * x[:, t, :1] * np.array([1.0, 0.7, 0.4])

    def loss(model, batch):
        return jnp.mean((jax.vmap(model)(batch["x"]) - batch["y"]) ** 2, axis=(1, 2))

    model = HierarchicalLSTM(FEATURES, 3, 6, attention="both", window=4, key=jax.random.PRNGKey(2), out_bounds=(-3, 3))
    mesh = column_mesh() if args.num_processes > 1 else None
    trained, history = fit(model, loss, {"x": x, "y": y}, epochs=3, batch_size=5, learning_rate=1e-2, seed=1,
                           progress=False, mesh=mesh, checkpoint_dir=args.checkpoint_dir,
                           stop_after=args.stop_after)  # fmt: skip
    if jax.process_index() == 0:
        leaves = jax.tree_util.tree_leaves(eqx.filter(trained, eqx.is_inexact_array))
        np.savez(args.output, *map(np.asarray, leaves), train_loss=np.asarray(history["train_loss"]),
                 resumed_from=history["resumed_from"], devices=len(jax.devices()))  # fmt: skip


if __name__ == "__main__":
    main()
