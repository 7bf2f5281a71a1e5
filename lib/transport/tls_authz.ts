/**
 * One rule of a {@linkcode TlsAuthz} list, as in QEMU's `authz-list`.
 */
export interface TlsAuthzRule {
  /** The distinguished name, or a glob pattern of one. */
  readonly match: string;
  /** What a matching name gets. */
  readonly policy: "allow" | "deny";
  /**
   * How `match` is compared: `exact`, or `glob` (`*` any run of characters,
   * `?` one, `[…]` a set), as QEMU's `fnmatch()`.
   *
   * @default {"exact"}
   */
  readonly format?: "exact" | "glob";
}

/**
 * Which client certificates may connect, by distinguished name, as QEMU's
 * `authz-list` object: the first rule that matches decides, else `policy`.
 * Names are in QEMU's (GnuTLS's) form, the certificate's order joined by
 * commas: `C=GB,O=Example,CN=source.example`.
 *
 * @example Usage
 * ```ts
 * import { checkTlsAuthz, type TlsAuthz } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const authz: TlsAuthz = { policy: "deny", rules: [{ match: "C=GB,O=Example,CN=*", policy: "allow", format: "glob" }] };
 * assert.equal(checkTlsAuthz("C=GB,O=Example,CN=source.example", authz), true);
 * ```
 */
export interface TlsAuthz {
  /** What a name matching no rule gets. */
  readonly policy: "allow" | "deny";
  /** The rules, tried in order. */
  readonly rules: readonly TlsAuthzRule[];
}

/**
 * Whether `dn` may connect under `authz`: the policy of the first rule
 * that matches it, else the list's policy.
 *
 * @example Usage
 * ```ts
 * import { checkTlsAuthz } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const authz = { policy: "deny", rules: [{ match: "C=GB,CN=a", policy: "allow" }] } as const;
 * assert.equal(checkTlsAuthz("C=GB,CN=a", authz), true);
 * assert.equal(checkTlsAuthz("C=GB,CN=b", authz), false);
 * ```
 *
 * @param dn The client certificate's distinguished name.
 * @param authz The list.
 * @returns Whether the name is allowed.
 */
export function checkTlsAuthz(dn: string, authz: TlsAuthz): boolean {
  for (const rule of authz.rules) {
    const matches = rule.format === "glob"
      ? globToRegExp(rule.match).test(dn)
      : rule.match === dn;
    if (matches) return rule.policy === "allow";
  }
  return authz.policy === "allow";
}

function globToRegExp(glob: string): RegExp {
  let source = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") source += "[\\s\\S]*";
    else if (c === "?") source += "[\\s\\S]";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) source += "\\[";
      else {
        const set = glob.slice(i + 1, end).replace(/^!/, "^")
          .replace(/\\/g, "\\\\");
        source += `[${set}]`;
        i = end;
      }
    } else if (c === "\\" && i + 1 < glob.length) {
      source += escapeRegExp(glob[++i]!);
    } else source += escapeRegExp(c);
  }
  return new RegExp(`^${source}$`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
