# Strongroom server image.  Not built or run on the machine this project is developed on
# (it cannot run Docker): see docs/deploy.md, "Containers".
#
#   docker build -t strongroom .
#   docker run -p 8700:8700 -v strongroom-data:/data strongroom
#
# The first start on an empty /data creates an organisation there (STRONGROOM_ORG names
# it).  The admin commands run in the container, beside the server:
#
#   docker exec -it CONTAINER strongroom admin --data /data user add alice
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Every dependency ships binary wheels for linux x86_64 (manylinux), so no compiler is
# needed.  On other architectures, check that vodozemac and sqlcipher3-binary have one.
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install /src && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin strongroom \
    && install -d -o strongroom -g strongroom -m 0700 /data /seed
COPY --chmod=755 deploy/docker-entrypoint.sh /usr/local/bin/strongroom-entrypoint

USER strongroom
WORKDIR /data
VOLUME /data
EXPOSE 8700

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/readyz', timeout=2)"]

ENTRYPOINT ["strongroom-entrypoint"]
CMD ["serve", "--data", "/data", "--host", "0.0.0.0"]
