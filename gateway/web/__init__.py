"""The web pages for operations and compliance (server-rendered, served by the daemon).

`add_web_pages(app, db, guard, status=...)` mounts them on the API's FastAPI app; see
gateway/web/pages.py for the pages and docs/web.md for what each shows.
"""

from gateway.web.pages import add_web_pages

__all__ = ["add_web_pages"]
