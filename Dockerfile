# syntax=docker/dockerfile:1
# The crossrec image: Ray 2.60.0 on Python 3.11 with torch 2.13.0 and crossrec installed, the
# same image for the Ray head, the GPU workers, `serve deploy`, the stream consumers and the
# online learner. Build from the repository root (tags carry the crossrec and Ray versions):
#
#   CPU (torch from the CPU wheel index):
#   $ docker build -t ghcr.io/crossrec/crossrec:0.1.0-ray2.60.0 .
#   GPU (CUDA base image, torch from the default index):
#   $ docker build --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#       --build-arg TORCH_INDEX_URL= -t ghcr.io/crossrec/crossrec:0.1.0-ray2.60.0-gpu .
#
# The working directory is the repository layout (cluster/, configs/, ...), so the relative
# paths in cluster/serve_config.yaml (`config: cluster/crossrec.yaml`) resolve in every Ray
# process started here. runs/ is where a volume for runs, checkpoints and the model registry
# goes. No secrets are baked in: CROSSREC_REDIS_PASSWORD, CROSSREC_KAFKA_PASSWORD and
# CROSSREC_API_KEY come from the environment at run time.
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311
FROM ${BASE_IMAGE}

# Empty for the GPU image (CUDA wheels from the default index).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV HF_HUB_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The base image's user is `ray` (uid 1000, group users); created here so it owns the folder
# (and a named volume mounted on runs/ starts out writable by it).
RUN mkdir -p /home/ray/crossrec/runs
WORKDIR /home/ray/crossrec

# torch first, pinned, from the right index: the project install below must not replace it.
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"

COPY --chown=ray:users pyproject.toml README.md constraints.txt ./
COPY --chown=ray:users crossrec/ crossrec/
COPY --chown=ray:users training/ training/
COPY --chown=ray:users serving/ serving/
# Ray pinned to the base image's version so no dependency resolution moves it.
RUN pip install -c constraints.txt . "ray[serve,train]==2.60.0" \
    && python -c "import crossrec, serving.app, training, ray; assert ray.__version__ == '2.60.0'"

COPY --chown=ray:users cluster/ cluster/
COPY --chown=ray:users configs/ configs/
