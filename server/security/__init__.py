"""Who may call a replica and over what: TLS and mutual TLS, callers' identities, roles and networks."""
