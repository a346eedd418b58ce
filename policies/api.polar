# Which API keys may call which area of the HTTP API.
#   decide: AuthZEN decisions and searches   manage: the /v1 management API
#   explain: /v1/explain                     audit_all: the whole audit log
#   policy: policy administration             metrics: /metrics (Prometheus)
allow(key: ApiKey, "call", area: String) if
    key_role_may(key.role, area);

key_role_may("pep", "decide");
key_role_may("portal", "decide");
key_role_may("portal", "manage");
key_role_may("portal", "explain");
key_role_may("admin", area) if area in ["decide", "manage", "explain", "audit_all", "policy", "metrics"];
