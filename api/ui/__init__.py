"""The dashboard's pages, charts, templates and style (served by :mod:`api.routes.ui`)."""
