# One image for every role: web (the default CMD), migrate, worker, urgent-worker, notifications-worker,
# beat and flower.
# docker-compose.yml picks the command for each; see docs/production.md.
#
# Pinned to bookworm because the runtime package below (libmariadb3) is named for that release.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: compile every pinned requirement into a wheel, then install the wheels into a venv ------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# mysqlclient has no binary wheel: it compiles against the MariaDB client headers found via pkg-config.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-libmysqlclient-dev pkg-config build-essential \
    && rm -rf /var/lib/apt/lists/*

COPY requirements.txt /tmp/requirements.txt
RUN pip wheel --wheel-dir /wheels -r /tmp/requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels -r /tmp/requirements.txt

# --- runtime: the venv, the client library, the code; no compiler ------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# MySQLdb/_mysql.so links libmariadb.so.3; the package also ships the caching_sha2_password plugin that
# MySQL 8.4's default accounts need.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/*

# A writable home: gunicorn puts its control socket in ~/.gunicorn/ (it only warns if it cannot). The staging
# factory simulator keeps its orders in ~/factory-simulator/, a volume in docker-compose.yml that takes this
# directory's owner when it is first made.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && install -d -o app -g app /home/app/factory-simulator

# Same base image in both stages, so the venv's interpreter path (/usr/local/bin/python3.11) holds.
COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Code and static files stay owned by root: the app user can read them but not change them.
COPY . .

# Settings refuse to load without their secrets; these values exist only for this one command and are
# never in the image's environment. Real ones come from .env at run time.
RUN DJANGO_SECRET_KEY=build-only FACTORY_API_KEY=build-only FACTORY_CALLBACK_SECRET=build-only \
    python manage.py collectstatic --noinput

# The "app" user, by number so runtimes that check runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

EXPOSE 8000

CMD ["gunicorn", "-c", "gunicorn.conf.py", "donutsite.wsgi"]
