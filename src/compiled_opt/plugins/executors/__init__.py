"""Built-in executors: ``local`` (this process, the default) and ``ray`` (``pip install 'compiled-opt[ray]'``)."""
