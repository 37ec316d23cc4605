# One image for every smsgw command (receiver, processor, sender, smsc-sim, migrate, admin).
# The install steps are the README's (tests/ops/test_compose.py checks that they stay so):
#   python3 -m venv .venv && .venv/bin/pip install -q -e .
# Not built on the development machines (no Docker engine there).
FROM python:3.11-slim-bookworm

RUN useradd --system --no-create-home --home-dir /nonexistent smsgw \
    && install -d -o smsgw -g smsgw -m 0750 /var/lib/smsgw /var/lib/smsgw/reports
WORKDIR /opt/smsgw
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
RUN python3 -m venv .venv && .venv/bin/pip install -q -e .

ENV PATH=/opt/smsgw/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER smsgw
# SIGTERM is the daemons' drain signal; exec-form commands make `smsgw` PID 1, so it gets it.
STOPSIGNAL SIGTERM
CMD ["smsgw", "--help"]
