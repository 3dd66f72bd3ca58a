#!/usr/bin/env python3
"""Writes N mesh resources (services, deployments, gateways, virtual services, destination
rules, service entries, policies) across namespaces into one multi-document YAML per namespace.
Usage: gen_resources.py OUT_DIR [N]"""
import os
import sys

out = sys.argv[1]
target = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
os.makedirs(out, exist_ok=True)

per_app = 9  # resources written per app below
apps_per_ns = 50
apps = max(1, target // per_app)
count = 0
ns_index = 0
while count < target:
    ns = f"team-{ns_index}"
    docs = [f"""apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    istio-injection: enabled
"""]
    count += 1
    for a in range(apps_per_ns):
        if count >= target:
            break
        app = f"app-{a}"
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {app}, namespace: {ns}}}
spec:
  selector: {{app: {app}}}
  ports:
  - {{name: http, port: 8080}}
""")
        for v in ("v1", "v2"):
            docs.append(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}-{v}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {app}, version: {v}}}}}
  template:
    metadata: {{labels: {{app: {app}, version: {v}}}}}
    spec:
      serviceAccountName: {app}
      containers:
      - name: app
        image: example/{app}:{v}
        ports: [{{containerPort: 8080}}]
""")
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {app}, namespace: {ns}}}
spec:
  hosts: [{app}]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: {app}, subset: v2}}}}]
  - match: [{{uri: {{prefix: /api/}}}}]
    route:
    - {{destination: {{host: {app}, subset: v1}}, weight: 80}}
    - {{destination: {{host: {app}, subset: v2}}, weight: 20}}
    timeout: 5s
    retries: {{attempts: 3, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}}
  - route: [{{destination: {{host: {app}, subset: v1}}}}]
""")
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {app}, namespace: {ns}}}
spec:
  host: {app}
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 2s}}
      http: {{http1MaxPendingRequests: 64, maxRequestsPerConnection: 10}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
""")
        docs.append(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {app}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/{ns}/sa/caller"]}}}}]
    to: [{{operation: {{methods: [GET, POST], paths: ["/api/*"]}}}}]
    when: [{{key: "request.headers[x-tenant]", values: ["{ns}"]}}]
""")
        docs.append(f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {app}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  mtls: {{mode: STRICT}}
""")
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {app}-ext, namespace: {ns}}}
spec:
  hosts: [{app}.{ns}.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
""")
        count += per_app - 1
    with open(os.path.join(out, f"{ns}.yaml"), "w") as f:
        f.write("---\n".join(docs))
    ns_index += 1
print(f"wrote {count} resources in {ns_index} namespaces to {out}")
