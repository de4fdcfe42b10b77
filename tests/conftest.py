"""Test set-up: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# With the tpu extra installed jax would probe for a TPU (and take libtpu's lock) in every worker.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests (and their subprocesses) compile the same train step: share the compiled
# executables through JAX's persistent cache, one directory per test session.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="moleblend-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    # Removed by the process that made it (xdist workers inherit the variable): ~7 MB a run,
    # which piled up in /tmp over many runs.
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

QM9_TEST_MOLECULES = 400
# The slowest test files, slowest first. Collected first, so that pytest-xdist's per-file
# scheduling (`--dist loadfile`) starts them early instead of leaving one worker alone with
# a long file at the end.
SLOW_FILES = (
    "test_train_multiprocess.py",
    "test_train_loop.py",
    "test_train_resume_memory.py",
    "test_own_data.py",
    "test_finetune_protocol.py",
    "test_sweep.py",
    "test_train_step.py",
    "test_interop_fairseq.py",
    "test_train_trajectory_fairseq.py",
    "test_model_precision.py",
    "test_model_moleblend.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # Stable: the order within each file and among the rest is kept.


@pytest.fixture(scope="session")
def qm9_shards(tmp_path_factory):
    """The first 400 bundled QM9 molecules as real TFRecord shards (built once per session)."""
    from moleblend_jax.data import shards

    out = tmp_path_factory.mktemp("qm9_shards")
    shards.build_shards("qm9", out, num_shards=4, workers=1, max_atoms=16, limit=QM9_TEST_MOLECULES)
    return out


@pytest.fixture(scope="module")
def experiment_script():
    """-> load(name): experiments/<name>.py (name may hold a folder: "study/x") as a module.
    The absl flags it defines are removed when the test module ends, so scripts that define
    the same flag names (workdir, out) can be tested in one session."""
    import importlib.util
    import pathlib

    from absl import flags

    experiments = pathlib.Path(__file__).resolve().parents[1] / "experiments"
    before = set(flags.FLAGS)

    def load(name: str):
        spec = importlib.util.spec_from_file_location(
            f"experiment_{name.replace('/', '_')}", experiments / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)


@pytest.fixture
def file_size_limit():
    """-> limit(bytes): no file of this process may grow past `bytes` (writes fail with EFBIG,
    as on a full disk) until the test ends."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)
