# The model alone, as a small image: the server's init container `model` copies it into the pod, so a
# new checkpoint rolls out (and rolls back) without a new server image. From the repository root:
#   docker build -f deploy/kubernetes/model.Dockerfile --build-arg MODEL=runs/mine/digits-encoder.safetensors \
#     -t REGISTRY/digits-model:2026-11-27 .
FROM busybox:1.37
ARG MODEL=models/digits-encoder.safetensors
COPY ${MODEL} /model/digits-encoder.safetensors
USER 10001
