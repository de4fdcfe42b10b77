"""One process of a multi-process CPU run, for test_train_multiprocess.py.

  python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT_JSON

Each process owns 2 CPU devices and feeds its rows of a fixed global batch; process 0 writes
the per-step losses. With NUM_PROCESSES=1 the single process feeds the whole batch.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(process_id: int, num_processes: int, port: int, data_dir: str, out: str) -> None:
    if num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )

    from train_testing import small_config

    from moleblend_jax import model as model_lib
    from moleblend_jax.data import pipeline
    from moleblend_jax.train import loop, optim, sharding
    from moleblend_jax.train import state as state_lib
    from moleblend_jax.train.step import jit_train_step, pretraining_loss_fn

    config = small_config(data_dir)
    mesh = sharding.make_mesh(config.mesh)
    model = model_lib.MoleBlend(config=config.model)
    schedule, tx = optim.pretraining_optimizer(config)
    layout = state_lib.state_layout(
        model,
        tx,
        loop.dummy_batch(jax.device_count(), 16),
        jax.random.PRNGKey(0),
        mesh,
        config.mesh.rules,
    )
    state, shardings = layout.init(), layout.shardings
    step_fn = jit_train_step(
        pretraining_loss_fn(model, dict(config.loss_weights)), tx, schedule, shardings, mesh
    )
    batches = pipeline.make_batches(data_dir, 16, (16,), seed=0, shuffle=True, repeat=True)
    rows = slice(process_id * 16 // num_processes, (process_id + 1) * 16 // num_processes)
    losses = []
    for _ in range(3):
        global_batch = next(batches)
        local = {k: v[rows] for k, v in global_batch.items()}
        state, metrics = step_fn(state, sharding.global_batch(local, mesh))
        losses.append(float(metrics["loss"]))
    if process_id == 0:
        with open(out, "w") as f:
            json.dump({"losses": losses, "devices": jax.device_count()}, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
