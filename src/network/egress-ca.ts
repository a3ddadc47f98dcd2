import "reflect-metadata"; // @peculiar/x509's DI container needs it loaded first
import * as x509 from "@peculiar/x509";
import { randomBytes, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext, type SecureContext } from "node:tls";

/**
 * The per-workspace certificate authority with which the egress proxy terminates a guest's TLS to
 * substitute secrets. The key stays on the host (the proxy reads it); only the certificate is
 * installed into the guest's trust stores, so a different workspace's CA never verifies here.
 * This module loads @peculiar/x509: import it lazily, only where TLS is intercepted.
 */
x509.cryptoProvider.set(webcrypto as never); // node:crypto's WebCrypto (its types are not the DOM's)

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;
/** A CA outlives any workspace; leaves are minted per proxy run and need far less. */
const CA_VALIDITY_DAYS = 3650;
const LEAF_VALIDITY_DAYS = 90;
/** Leaves kept at once: a guest naming endless hosts must not grow the proxy's small heap. */
const LEAF_CACHE_SIZE = 256;
/** Clock skew between host and guest at cold boot. */
const BACKDATE_MS = DAY_MS;

export interface CertificateAuthorityFiles {
  certPem: string;
  keyPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END ${label}-----\n`;
}

function der(text: string): Buffer {
  return Buffer.from(text.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64");
}

const serial = () => `01${randomBytes(15).toString("hex")}`; // positive, 16 bytes

/** Mints a new CA whose name says which workspace it belongs to. */
export async function mintCertificateAuthority(workspaceId: string): Promise<CertificateAuthorityFiles> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=pyro egress CA for workspace ${workspaceId}, O=pyro`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: SIGNING,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)) };
}

/**
 * Leaf certificates for the hosts a guest connects to, minted on first use and cached for the
 * proxy's life. One leaf key serves every host: minting is then one signature (a few ms).
 */
export class LeafCertificates {
  private readonly cache = new Map<string, Promise<SecureContext>>();

  private constructor(
    private readonly ca: x509.X509Certificate,
    private readonly caKey: CryptoKey,
    private readonly leafKeys: CryptoKeyPair,
    private readonly leafKeyPem: string,
  ) {}

  static async load(files: CertificateAuthorityFiles): Promise<LeafCertificates> {
    const ca = new x509.X509Certificate(files.certPem);
    const caKey = await webcrypto.subtle.importKey("pkcs8", der(files.keyPem), EC, false, ["sign"]);
    const leafKeys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
    return new LeafCertificates(ca, caKey, leafKeys, pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", leafKeys.privateKey)));
  }

  /** A TLS context presenting a certificate for `host` (a name or an IP literal), signed by the CA. */
  contextFor(host: string): Promise<SecureContext> {
    let context = this.cache.get(host);
    if (context) {
      // Most recently used last: Map order is the eviction order.
      this.cache.delete(host);
    } else {
      context = this.mint(host);
      context.catch(() => this.cache.delete(host));
      if (this.cache.size >= LEAF_CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
    }
    this.cache.set(host, context);
    return context;
  }

  private async mint(host: string): Promise<SecureContext> {
    const now = Date.now();
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      // Clients match the SAN; the CN is informative and limited to 64 characters.
      subject: isIP(host) || host.length > 64 ? "CN=pyro egress" : `CN=${host}`,
      issuer: this.ca.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(Math.min(now + LEAF_VALIDITY_DAYS * DAY_MS, this.ca.notAfter.getTime())),
      signingAlgorithm: SIGNING,
      publicKey: this.leafKeys.publicKey,
      signingKey: this.caKey,
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: isIP(host) ? "ip" : "dns", value: host }]),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(this.ca.publicKey),
        await x509.SubjectKeyIdentifierExtension.create(this.leafKeys.publicKey),
      ],
    });
    // Only HTTP/1.1 is offered: the proxy parses and rewrites requests as HTTP/1.1.
    return createSecureContext({ key: this.leafKeyPem, cert: leaf.toString("pem") + "\n" + this.ca.toString("pem") + "\n" });
  }
}
