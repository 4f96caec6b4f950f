"""The deployable gateway.

Deliberately empty of imports: ``gateway.protocol`` is a leaf that ingest imports, and
importing it must not drag in the gateway's drivers or config. Public modules:

    gateway.protocol   the northbound wire contract (topics, envelopes, signing)
    gateway.config     the gateway config file model
"""
