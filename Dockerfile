# The service image: `docker build -t authz .` then
#   docker run -e AUTHZ_ENV=production -e AUTHZ_DATABASE_URL=postgresql+psycopg://... -p 8080:8080 authz
# (not built in this project's CI: its machines run no Docker engine).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 AUTHZ_POLICY_DIR=/srv/authz/policy
WORKDIR /srv/authz

COPY pyproject.toml README.md constraints.txt ./
COPY authz ./authz
COPY service ./service
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system --home /srv/authz authz \
    && install -d -o authz -m 700 /var/cache/authz
# The impact census (docs/operations.md): a folder of the service's user alone.
ENV AUTHZ_CACHE_DIR=/var/cache/authz

# Policy files are data that admins own: mount your own over this folder to deploy.
COPY policies.polar ./policy/policies.polar
COPY policies ./policy/policies

USER authz
EXPOSE 8080
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz')"
CMD ["sh", "-c", "authz db upgrade && exec authz serve --host 0.0.0.0 --port 8080 --workers ${AUTHZ_WORKERS:-2}"]
