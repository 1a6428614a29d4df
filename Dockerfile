# The batchgen image: the wheel built from this repo, installed with its dependencies at the
# versions in constraints.txt, run as a non-root user (uid 10001). docs/install.md says how to
# build, push and run it; the key comes at run time, never from the image:
#
#   docker build -t registry.example.com/team/batchgen:0.3.0 .
#   docker run --rm --user "$(id -u):$(id -g)" -e BATCHGEN_API_KEY \
#     -v "$PWD:/work" -v "$PWD/output:/work/output" registry.example.com/team/batchgen:0.3.0 run jobs/
#
# RUN --mount needs BuildKit: the default builder since Docker 23 (and buildah/podman's).
# tests/test_container.py checks this file, and builds and runs the wheel as the stages below do.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY batchgen ./batchgen
# The backend of constraints.txt builds the project's wheel (as in the dev virtualenv), and pip
# fetches a wheel of every dependency at its pinned version: the next stage installs from /wheels
# alone, and nothing of this stage but those wheels reaches the image.
RUN pip install --no-cache-dir --disable-pip-version-check -c constraints.txt setuptools wheel \
    && pip wheel --no-cache-dir --disable-pip-version-check --no-build-isolation \
        -c constraints.txt -w /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="batchgen" \
      org.opencontainers.image.description="Turn YAML manifests into generated images at catalog scale" \
      org.opencontainers.image.version="0.3.0" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/batchgen/bin:$PATH
# A virtualenv of the wheel and its dependencies only: no pip, no setuptools, no source tree.
# /work and /work/output belong to the user, for runs whose volumes Docker makes from the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/constraints.txt,target=/tmp/constraints.txt \
    python -m venv --without-pip /opt/batchgen \
    && pip --python /opt/batchgen/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels -c /tmp/constraints.txt /wheels/batchgen_images-*.whl \
    && groupadd --system --gid 10001 batchgen \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin batchgen \
    && mkdir -p /work/output \
    && chown 10001:10001 /work /work/output
# Numeric, so that Kubernetes' runAsNonRoot can see it is not root.
USER 10001:10001
WORKDIR /work
# Manifests are mounted at /work, the output at /work/output. Mount both: a volume mounted at
# /work alone leaves /work/output to a volume of its own (Docker's anonymous one, a throwaway
# directory on Kubernetes), and the images would not be where you look for them.
VOLUME /work/output
ENTRYPOINT ["batchgen"]
CMD ["--help"]
