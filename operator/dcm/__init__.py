"""Darwin's cluster manager (DCM) answered by the operator, so Darwin's ML Serve API keeps working
after its Helm-based deployer is retired.

Darwin's API calls DCM before it writes any row: ``POST /resource-instance/`` (pack a chart's
values as an "artifact" ``<env>-<serve>-<version>``), ``POST /resource-instance/start`` (``helm
upgrade --install`` of the release ``<env>-<serve>``), ``PATCH /resource-instance/values`` (new
infra values for that artifact), ``POST /resource-instance/stop`` (``helm delete``) and
``POST /resource-instance/status`` (the release's pods). Only when DCM answers does Darwin write
the rows: the deployment and its pointer, the ended deployment, the infra config (that one is
written before the call). Those rows are the record; the operator's database sync turns them
into MLServes as it does for any deploy made in the database.

So the endpoint writes nothing, to the database or to the cluster: it checks that the call names
a serve, an environment and an artifact this operator runs (so Darwin records nothing the
operator would not run) and answers the way DCM does. One writer per fact: Darwin's API writes
the deployment rows, the sync writes the MLServes.

- :mod:`.bodies`: the request bodies, parsed and checked (pure);
- :mod:`.resolve`: the names in them resolved against the database;
- :mod:`.server`: the aiohttp application ``mlserve run`` serves on ``MLSERVE_DCM_LISTEN``;
- :mod:`.takeover`: ``mlserve takeover``, moving one serve from Darwin's Helm release to an MLServe.
"""
