/**
 * The record layout both conversions write: the stream of the input around
 * RAM that is laid out anew. Private to lib/inspect/.
 *
 * ```
 * header, CONFIGURATION
 * RAM START   block list, EOS, footer
 * RAM PART    the page batches given, EOS, footer
 * RAM END     EOS, footer
 * tail        device sections, EOF, vmdesc: as in the input
 * ```
 *
 * For a mapped-ram file the pages are those to store at fixed offsets; for
 * a plain stream they are one ZERO or PAGE record per page.
 *
 * @module
 */

import type { RamBlockInfo } from "../ram/ram_record.ts";
import type {
  ConfigurationRecord,
  HeaderRecord,
  MigrationRecord,
  SectionStartRecord,
} from "../wire/migration_record.ts";

/** What a rebuilt stream keeps from the stream it is made from. */
export interface StreamFrame {
  /** The stream header. */
  header: HeaderRecord;
  /** The CONFIGURATION section, as the output should announce it. */
  configuration: ConfigurationRecord;
  /** The RAM START section header. */
  ramSection: SectionStartRecord;
  /** The block list. */
  blocks: RamBlockInfo[];
  /** The records after the RAM, in order: device sections, EOF, vmdesc. */
  tail: MigrationRecord[];
}

/**
 * Yields the records of `frame` with `pages` in the RAM PART section, one
 * batch per yield.
 */
export async function* rebuildStream(
  frame: StreamFrame,
  pages: AsyncIterable<MigrationRecord[]> | Iterable<MigrationRecord[]>,
): AsyncGenerator<MigrationRecord[]> {
  const section = frame.ramSection.sectionId;
  yield [
    frame.header,
    frame.configuration,
    frame.ramSection,
    { type: "ram-mem-size", blocks: frame.blocks },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: section },
    { type: "section-part", sectionId: section },
  ];
  yield* pages;
  yield [
    { type: "ram-eos" },
    { type: "section-footer", sectionId: section },
    { type: "section-end", sectionId: section },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: section },
    ...frame.tail,
  ];
}
