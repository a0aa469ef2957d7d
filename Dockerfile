# syntax=docker/dockerfile:1
# One image for every EnvCat server process (api, worker, beat, bff, migrations) and one
# for the documentation site. Built by compose.yaml, or by hand:
#   docker build -t envcat .                      # the server (the final stage)
#   docker build --target docs -t envcat-docs .   # the static docs site on port 8889

# ---- builder: the wheel with the server extra, installed into a venv ---------------
FROM python:3.11 AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY envcat ./envcat
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/envcat \
 && /opt/envcat/bin/pip install "$(ls /wheels/envcat-*.whl)[server]"

# ---- docs-build: mkdocs generates the CLI, API and configuration references --------
FROM builder AS docs-build
RUN /opt/envcat/bin/pip install "mkdocs>=1.6" "mkdocs-material>=9.5"
COPY mkdocs.yml ./
COPY docs ./docs
# The diagrams' mermaid, pinned and integrity-checked, served with the site (no CDN).
COPY scripts/js-deps.txt scripts/fetch_js.py ./scripts/
RUN python scripts/fetch_js.py mermaid
RUN /opt/envcat/bin/mkdocs build --strict --site-dir /site

# ---- docs: the built site, served as static files -----------------------------------
FROM python:3.11-slim AS docs
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin envcat
COPY --from=docs-build /site /srv/site
USER envcat
EXPOSE 8889
CMD ["python", "-m", "http.server", "8889", "--directory", "/srv/site"]

# ---- runtime: the venv on a slim base, no compilers, a non-root user ----------------
FROM python:3.11-slim AS runtime
ENV PATH=/opt/envcat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////data/envcat.db
RUN groupadd --system --gid 10001 envcat \
 && useradd --system --uid 10001 --gid envcat --home-dir /data --shell /usr/sbin/nologin envcat \
 && mkdir -p /data \
 && chown envcat:envcat /data
COPY --from=builder /opt/envcat /opt/envcat
USER envcat
WORKDIR /data
# No VOLUME here: compose.yaml mounts the envcat-data volume only where it is needed
# (the bff gets none), and an image-level VOLUME would give every container one.
EXPOSE 5000 8888 9808
CMD ["envcat", "server", "--help"]
