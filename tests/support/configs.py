"""Config texts shared by tests."""

# A valid config that uses every kind of table the settings engine knows: adapters of four types
# (a tagged union; "otp" is gemalto's other name), a PEM keystore in the keyed-table form and a
# PKCS#12 one, a truststore, SNI, users, packages, pools and a cluster. Nothing here is opened:
# parse_config checks the text only.
EVERY_TABLE = """
[server]
workers = 2
[server.tls]
keystore = "pem"
key_alias = "one"

[[packages]]
name = "p1"

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
package = "p1"

[[users]]
name = "alice"
token = "abcdefghijklmnopqrstu"
ports = ["wss"]

[[keystores]]
alias = "pem"
type = "pem"
[keystores.keys.one]
cert = "one.crt"
key = "one.key"
[keystores.keys."two words"]
cert = "two.crt"
key = "two.key"
chain = "ca.pem"

[[keystores]]
alias = "p12"
type = "pkcs12"
path = "a.p12"
password_env = "PW"

[[truststores]]
alias = "clients"
type = "pem"
path = "clients.pem"

[[adapters]]
name = "corp"
type = "radius"
servers = [{ url = "radius://127.0.0.1:1812", priority = 1 }]
[adapters.radius]
secret_file = "secret"
attributes = { Service-Type = "Login-User", NAS-Port = 7 }

[[adapters]]
name = "dir"
type = "ldap"
security_protocol = "tls"
servers = [{ url = "ldaps://127.0.0.1:636" }]
truststore = "clients"
[adapters.ldap]
bind_dn_template = "uid={username},dc=x"

[[adapters]]
name = "otp"
type = "otp"
servers = [{ url = "http://127.0.0.1:5001" }]
[adapters.otp]
first_factor = "corp"

[[adapters]]
name = "oc"
type = "ocsp"

[[ports]]
alias = "wss"
port = 8443
protocol = "wss"
client_auth = "token"
[ports.tls]
keystore = "pem"
key_alias = "one"
client_certs = "request"
truststore = "clients"
ocsp = "oc"
[ports.tls.sni]
"two.example" = "two words"
[ports.access]
ip_deny = ["10.0.0.0/8"]
[ports.origin]
allowed = ["https://a.example"]

[[ports]]
alias = "ws"
port = 8080
client_auth = "adapter:dir"
[ports.pool]
min = 1
max = 4

[cluster]
broker = "redis://127.0.0.1:6379"
"""
