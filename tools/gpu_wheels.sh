#!/usr/bin/env bash
# Gathers, for a GPU machine that has no access to a package index, the wheels that
# `bash benchmark.sh gpu` needs there and a JAX GPU image lacks. Run it from the repository root on
# a machine where pip can download:
#   bash tools/gpu_wheels.sh                 # wheels into .whl/ (about 25 MB)
#   PYVER=3.11 bash tools/gpu_wheels.sh      # for another Python on the GPU machine (default 3.12)
# It downloads the pinned brax, mujoco, mujoco-mjx and tyro of requirements.txt with their
# dependencies, for Linux x86-64, and keeps those that a JAX GPU image (jax and jaxlib with CUDA,
# flax, optax, numpy, scipy) does not already have; the image's own versions of those stay in use.
# Copy the repository with .whl/ to the GPU machine and run `bash benchmark.sh gpu` there:
# `tools/bench.py gpu` installs .whl/*.whl into a --target folder first and puts it on the PYTHONPATH
# of every measurement. A GPU machine with nothing installed needs every package instead:
#   pip download -r requirements.txt "jax[cuda12]==0.10.2" -d wheels/     # here
#   pip install --no-index --find-links wheels/ -r requirements.txt "jax[cuda12]==0.10.2"   # there
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${PYVER:-3.12}
python=${PYTHON:-python3}
# the project's pins of what must travel (requirements.txt)
pins=$(grep -E '^(brax|mujoco|mujoco-mjx|tyro)==' requirements.txt)
# in a JAX GPU image already (and their dependencies), or not needed for the measurements (GL viewers,
# mujoco's studio, wandb, plotting, tests): never gathered, so the image's versions stay in use
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
