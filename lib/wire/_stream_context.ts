/**
 * What a decoder knows about a stream so far, and how each record changes
 * it: the CONFIGURATION sets the page size and capabilities, START and
 * FULL sections are remembered by id, POSTCOPY_ADVISE announces per-block
 * page sizes, LISTEN (or a PACKAGED blob, which holds it) makes the rest
 * postcopy, the vmdesc trailer describes the devices. The RAM records'
 * own context (blocks, current block) lives in their decoder.
 *
 * @module
 */

import type { RamBlockInfo } from "../ram/ram_record.ts";
import { RamRecordDecoder } from "./_ram_record_decoder.ts";
import type { DecodedSection } from "./migration_decoder.ts";
import type {
  ConfigurationRecord,
  MigrationRecord,
} from "./migration_record.ts";
import type { VmdescDocument } from "./vmdesc.ts";

/** What a {@linkcode StreamContext} starts with. */
export interface StreamContextOptions {
  /** The target page size. */
  pageSize: number;
  /** RAM blocks known before the stream starts. */
  blocks: readonly RamBlockInfo[];
  /** Sections known before the stream starts. */
  sections: readonly DecodedSection[];
  /** Capabilities known before the stream starts. */
  capabilities: readonly string[];
}

/** The decoding context of one stream. */
export class StreamContext {
  readonly #blocks = new Map<string, RamBlockInfo>();
  readonly #capabilities: Set<string>;
  readonly #sections = new Map<number, DecodedSection>();
  readonly #ram: RamRecordDecoder;
  #configuration: ConfigurationRecord | undefined;
  #postcopy = false;
  #vmdesc: VmdescDocument | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options What is known before the stream starts.
   */
  constructor(options: StreamContextOptions) {
    this.#capabilities = new Set(options.capabilities);
    for (const block of options.blocks) this.#blocks.set(block.idstr, block);
    for (const section of options.sections) {
      this.#sections.set(section.sectionId, section);
    }
    this.#ram = new RamRecordDecoder({
      pageSize: options.pageSize,
      blocks: this.#blocks,
      capabilities: this.#capabilities,
    });
  }

  /** The RAM record decoder, which holds the page size and blocks. */
  get ram(): RamRecordDecoder {
    return this.#ram;
  }

  /** The RAM blocks announced so far, by idstr, in announcement order. */
  get blocks(): ReadonlyMap<string, RamBlockInfo> {
    return this.#blocks;
  }

  /** The sections seen so far, by section id. */
  get sections(): ReadonlyMap<number, DecodedSection> {
    return this.#sections;
  }

  /** The capabilities known to shape the stream. */
  get capabilities(): ReadonlySet<string> {
    return this.#capabilities;
  }

  /** The CONFIGURATION section, once decoded. */
  get configuration(): ConfigurationRecord | undefined {
    return this.#configuration;
  }

  /** Whether the stream is in postcopy: no vmdesc follows its EOF. */
  get postcopy(): boolean {
    return this.#postcopy;
  }

  /** The vmdesc trailer, once decoded. */
  get vmdesc(): VmdescDocument | undefined {
    return this.#vmdesc;
  }

  set vmdesc(document: VmdescDocument | undefined) {
    this.#vmdesc = document;
  }

  /**
   * Takes in what a record tells about the rest of the stream.
   *
   * @param record A decoded record.
   */
  note(record: MigrationRecord): void {
    switch (record.type) {
      case "configuration":
        if (record.targetPageBits !== undefined) {
          this.#ram.pageSize = 2 ** record.targetPageBits;
        }
        for (const capability of record.capabilities ?? []) {
          this.#capabilities.add(capability);
        }
        this.#configuration = record;
        return;
      case "section-start":
      case "section-full": {
        const { sectionId, idstr, instanceId, versionId } = record;
        this.#sections.set(sectionId, {
          sectionId,
          idstr,
          instanceId,
          versionId,
        });
        return;
      }
      case "command":
        this.#command(record);
        return;
      case "vmdesc":
        this.#vmdesc = record.document;
        return;
    }
  }

  #command(record: MigrationRecord & { type: "command" }): void {
    switch (record.command) {
      case "POSTCOPY_LISTEN":
      case "PACKAGED":
        // Only postcopy packages a stream, and its LISTEN is inside the
        // package: from here on the stream is postcopy (no vmdesc after
        // EOF).
        this.#postcopy = true;
        return;
      case "POSTCOPY_ADVISE":
        if (record.pageSizeSummary === undefined) return;
        this.#ram.pageSizeSummary = record.pageSizeSummary;
        this.#capabilities.add("postcopy-ram");
        return;
    }
  }
}
