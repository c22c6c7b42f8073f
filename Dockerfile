# One image for every service (server, telegram, discord); compose.yaml picks the command.
# CPU-only PyTorch keeps the image small; for a GPU host, install the CUDA wheels instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Heavy, rarely changing layer first: CPU wheels of torch/torchvision from the PyTorch index.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4" "torchvision>=0.19"

COPY pyproject.toml README.md* ./
COPY model model
COPY training training
COPY preprocessing preprocessing
COPY server server
COPY client client
COPY bots bots
COPY launcher launcher
COPY testkit testkit
COPY protos protos
COPY models models
# Editable, so the code keeps finding models/ next to it (the shipped checkpoint).
RUN pip install -e .

# Never run as root; the app only needs to read /app.
RUN useradd --create-home --uid 10001 digits
USER digits
# The server's default runtime exports the model to ONNX once per machine: do it here, into the
# image, so a container starts without it (server/runtimes.py).
RUN python -m server.runtimes

EXPOSE 50051 9464
# Default: everything in one container (server + every bot whose token is set).
CMD ["digits-run", "--host", "0.0.0.0"]
