#!/usr/bin/env bash
# Downloads into .whl/ the wheels that a lent GPU machine lacks for `bash benchmark.sh gpu` (adapted
# from ../shared/tools/gpu-wheels.sh). The device image (Python 3.12) has its own jax, jaxlib, flax,
# optax, numpy, scipy and CUDA, in versions that fit each other: those are used as they are, and
# only what the image lacks travels (brax, mujoco, mujoco-core, mujoco-mjx, tyro and their missing
# dependencies, about 25 MB of the 64 MiB that a call may carry).
#   bash tools/gpu_wheels.sh            # from the repository root, on a machine with pip access
# Then one device call: carry [".whl"], command `bash benchmark.sh gpu`; tools/gpu_bench.py installs
# .whl/*.whl into a --target folder and puts it on PYTHONPATH of every measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${PYVER:-3.12}
python=${PYTHON:-python3}
# the project's pins of what must travel (requirements.txt)
pins=$(grep -E '^(brax|mujoco|mujoco-mjx|tyro)==' requirements.txt)
# on the device already (the nvidia-h200 image's package list, /work/.library/device/KINDS.md), or
# not needed there (GL viewers, mujoco's studio): never carried, so the image's versions stay in use
skip='^(jax|jaxlib|jax_cuda.*|numpy|scipy|ml_dtypes|opt_einsum|flax|optax|chex|orbax_checkpoint|tensorstore|absl_py|etils|fsspec|importlib_resources|zipp|typing_extensions|msgpack|rich|markdown_it_py|mdurl|pygments|pyyaml|protobuf|pillow|jinja2|markupsafe|click|werkzeug|humanize|psutil|packaging|simplejson|treescope|toolz|nest_asyncio|aiofiles|uvloop|prometheus_client|cloudpickle|wrapt|nvidia_.*|mujoco_studio|glfw|pyopengl|wandb|matplotlib|pytest.*)$'
tmp=$(mktemp -d)
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$python" -m pip download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp" $pins 2>&1 | grep -v -i warning || true
for w in "$tmp"/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | tr 'A-Z-' 'a-z_')
  [[ $name =~ $skip ]] || cp "$w" .whl/
done
rm -rf "$tmp"
for need in brax mujoco mujoco_core mujoco_mjx tyro; do
  ls .whl/"$need"-*.whl >/dev/null 2>&1 || { echo "error: no $need wheel was downloaded" >&2; exit 1; }
done
ls -1 .whl; du -sh .whl
