# The project's image for Ray on Kubernetes (k8s/): Ray 2.60 on Python 3.11 with ANU-Net, its
# jobs and MLflow (the jobs and the tracking server in k8s/mlflow.yaml use the same image).
#
#   CPU (head, CPU workers, MLflow):
#     docker build -t registry.example.com/anunet:0.1.0 .
#   GPU (GPU workers; CUDA torch from PyPI):
#     docker build -t registry.example.com/anunet-gpu:0.1.0 \
#       --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#
# Both must come from one commit: the Ray version and the project code of every node match.
# Every Python package comes at the version pinned in constraints.txt (`pip install -c`): the
# versions the tests passed with, on every rebuild; its header says how to regenerate it.
# The image runs as ray (uid 1000, group users = 100), never as root; the k8s/ manifests set
# runAsUser 1000, runAsGroup 100 and fsGroup 100 to match, and a read-only root filesystem.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

# The base image's user is ray (uid 1000, group users); the folder is created as ray so that
# `pip install .` can build in it. The RayCluster specs set this as the containers' workingDir,
# so that the entrypoints `python jobs/<name>.py ...` resolve.
RUN mkdir -p /home/ray/anunet
WORKDIR /home/ray/anunet
COPY --chown=ray:users constraints.txt ./

# torch first, alone and pinned, from PyTorch's CPU wheel index on the CPU image: the project's
# own `torch>=2.4` is then already satisfied, so the next step never pulls the multi-GB CUDA
# build. torch's dependencies come with the next step, from PyPI, pinned like everything else.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --no-deps -c constraints.txt "${TORCH_SPEC}" --index-url "${TORCH_INDEX_URL}"

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users anunet_core/ anunet_core/
COPY --chown=ray:users platform/ platform/
COPY --chown=ray:users jobs/ jobs/

# The project (and Ray's extras, MLflow, nibabel, pydicom...), then for the MLflow server its
# basic-auth app (mlflow[auth]: Flask-WTF) and PostgreSQL's driver (backend and auth stores).
RUN pip install --no-cache-dir -c constraints.txt . "mlflow[auth]" psycopg2-binary \
    && python -c "import torch, anunet_core, anunet_platform, flask_wtf, psycopg2; print('torch', torch.__version__)"

# Numeric, so that the kubelet can check runAsNonRoot against the image itself.
USER 1000:100
