# The tandem image: the supervisor (`tandem serve`) and its workers, with rsync
# and an ssh client, on a minimal Debian 12.
#
# Build it with scripts/build-image, which makes both inputs first:
#   - the base image tandem-base:bookworm, from debootstrap (Debian's mirror is
#     all it needs; no registry), imported with `docker import`;
#   - build/wheels: tandem and its dependencies as wheels, built on the host,
#     so the build itself needs no network.
# With a registry at hand, BASE can be any Debian 12 image that has python3-venv,
# rsync and openssh-client installed.
ARG BASE=tandem-base:bookworm
FROM ${BASE}

ARG VERSION=unknown
LABEL org.opencontainers.image.title="tandem" \
      org.opencontainers.image.description="Keeps the data of containers in sync with a peer host" \
      org.opencontainers.image.version="${VERSION}"

COPY build/wheels /wheels
RUN python3 -m venv /opt/tandem \
 && /opt/tandem/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /wheels tandem \
 && rm -rf /wheels \
 && /opt/tandem/bin/tandem --version

# No TANDEM_* settings here: the environment beats the config file, so one set
# in the image would silently override a mounted tandem.toml.
ENV PATH=/opt/tandem/bin:$PATH \
    PYTHONUNBUFFERED=1
VOLUME /var/lib/tandem
EXPOSE 8765
ENTRYPOINT ["/opt/tandem/bin/tandem"]
CMD ["serve"]
