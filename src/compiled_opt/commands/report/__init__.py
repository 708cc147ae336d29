"""``compiled-opt report``: what a run's page shows (``data``), its figures (``figures``), the page (``html``)."""
