"""The aggregator's HTTP layer: a Starlette app over the services of :mod:`edgekm.sync.cloud`,
served by uvicorn (the ``server`` extra)."""
