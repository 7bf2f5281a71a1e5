/**
 * Names the cause of a TLS failure in terms of the migration's settings
 * (which file, which parameter), keeping the library's own text. Private
 * to lib/transport/.
 *
 * @module
 */

import type { TlsCredentials } from "./tls_credentials.ts";

const HINTS: readonly [RegExp, (c: TlsCredentials) => string][] = [
  [
    /UNABLE_TO_VERIFY|UnknownIssuer|unable to verify|self[- ]signed|BadSignature/i,
    (c) =>
      `the peer's certificate is not signed by the CA in ${c.dir}/ca-cert.pem`,
  ],
  [
    /UnknownCA|UNKNOWN_CA|BadCertificate|BAD_CERTIFICATE/,
    () =>
      "the peer refused this side's certificate (signed by a CA it does not trust?)",
  ],
  [
    /ALTNAME|does not match certificate|NotValidForName/i,
    () =>
      "the server's certificate does not carry the expected host name (tls-hostname)",
  ],
  [
    /CertificateRequired|peer sent no certificates|NoCertificate/i,
    (c) =>
      c.endpoint === "server"
        ? "the client sent no certificate and verify-peer is on"
        : `the server requires a client certificate (${c.dir}/client-cert.pem)`,
  ],
  [
    /InvalidContentType|wrong version|corrupt message|InvalidMessage|record overflow|http request/i,
    () => "the peer did not speak TLS (a plaintext peer?)",
  ],
  [
    /socket disconnected before secure|ECONNRESET|EPIPE|connection reset|socket hang up|UnexpectedEof|peer closed connection without/i,
    (c) =>
      c.endpoint === "client"
        ? c.cert === undefined
          ? `the server closed the connection during or just after the TLS handshake (a plaintext listener, or one that requires a client certificate: ${c.dir}/client-cert.pem is missing)`
          : "the server closed the connection during or just after the TLS handshake (a plaintext listener, or one that refused this client's certificate)"
        : "the client closed the connection during the TLS handshake (it refused this server's certificate?)",
  ],
  [
    /timed out|handshake timeout/i,
    () =>
      "the peer sent no TLS handshake within the idle timeout (a plaintext peer?)",
  ],
];

/**
 * Returns an error whose message names the likely cause of `error`,
 * followed by the original text in parentheses, with `error` as cause.
 */
export function describeTlsError(
  error: Error,
  credentials: TlsCredentials,
  peer?: string,
): Error {
  const text = error.message || String(error);
  const code = (error as { code?: unknown }).code;
  const detail = typeof code === "string" && !text.includes(code)
    ? `${text}, ${code}`
    : text;
  const hint = HINTS.find(([pattern]) => pattern.test(detail));
  const from = peer === undefined ? "" : ` (peer ${peer})`;
  const message = hint === undefined
    ? `TLS failed${from}: ${detail}`
    : `${hint[1](credentials)}${from} (${detail})`;
  return new Error(message, { cause: error });
}
