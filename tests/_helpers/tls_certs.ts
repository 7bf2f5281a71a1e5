/**
 * Test x509 credentials made with `openssl` at test time, laid out as
 * QEMU's `tls-creds-x509` directory: ca-cert.pem, server-cert.pem,
 * server-key.pem, client-cert.pem, client-key.pem. Private keys never
 * leave the temporary directory.
 *
 * @module
 */

/** What {@linkcode createTlsCredentials} made. */
export interface TestTlsCredentials {
  /** The directory, in QEMU's layout. */
  dir: string;
  /** The client certificate's DN as QEMU prints it. */
  clientDn: string;
  /** Removes the directory. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for {@linkcode createTlsCredentials}. */
export interface CreateTlsCredentialsOptions {
  /** @default {"livemig test CA"} */
  caName?: string;
  /** Names (DNS) the server certificate carries, besides IP 127.0.0.1. */
  serverNames?: string[];
  /** @default {"source.example"} */
  clientCn?: string;
  /** Leave out client-cert.pem and client-key.pem. */
  noClientCert?: boolean;
}

/** Whether `openssl` can be run here. */
export async function hasOpenssl(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** Makes a CA, a server and a client certificate in a new directory. */
export async function createTlsCredentials(
  options: CreateTlsCredentialsOptions = {},
): Promise<TestTlsCredentials> {
  const {
    caName = "livemig test CA",
    serverNames = ["localhost"],
    clientCn = "source.example",
  } = options;
  const dir = await Deno.makeTempDir({ prefix: "livemig-tls-" });
  const run = async (args: string[]) => {
    const { success, stderr } = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!success) {
      throw new Error(
        `openssl ${args[0]} failed: ${new TextDecoder().decode(stderr)}`,
      );
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  await run([
    "req",
    "-x509",
    ...ec,
    "-nodes",
    "-days",
    "2",
    "-keyout",
    "ca-key.pem",
    "-out",
    "ca-cert.pem",
    "-subj",
    `/C=GB/O=livemig/CN=${caName}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]); // deno-fmt-ignore
  const sign = async (name: string, subject: string, ext: string) => {
    await run([
      "req", ...ec, "-nodes", "-keyout", `${name}-key.pem`,
      "-out", `${name}.csr`, "-subj", subject,
    ]); // deno-fmt-ignore
    await Deno.writeTextFile(`${dir}/${name}.ext`, ext);
    await run([
      "x509", "-req", "-in", `${name}.csr`, "-CA", "ca-cert.pem",
      "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2",
      "-out", `${name}-cert.pem`, "-extfile", `${name}.ext`,
    ]); // deno-fmt-ignore
  };
  const san = [...serverNames.map((n) => `DNS:${n}`), "IP:127.0.0.1"];
  await sign(
    "server",
    `/C=GB/O=livemig/CN=${serverNames[0] ?? "server"}`,
    `subjectAltName=${san.join(",")}\nbasicConstraints=critical,CA:FALSE\n` +
      "keyUsage=critical,digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=serverAuth\n",
  );
  if (!options.noClientCert) {
    await sign(
      "client",
      `/C=GB/O=livemig/CN=${clientCn}`,
      "basicConstraints=critical,CA:FALSE\n" +
        "keyUsage=critical,digitalSignature,keyEncipherment\n" +
        "extendedKeyUsage=clientAuth\n",
    );
  }
  for (const entry of ["ca-key.pem", "server.csr", "client.csr"]) {
    await Deno.remove(`${dir}/${entry}`).catch(() => {});
  }
  return {
    dir,
    clientDn: `C=GB,O=livemig,CN=${clientCn}`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}
