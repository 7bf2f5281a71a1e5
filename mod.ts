/**
 * livemig: QEMU's live migration as WHATWG stream stages for Deno.
 *
 * Decode a QEMU migration stream into typed records and rebuild the guest
 * RAM the destination would hold:
 *
 * ```ts
 * import { ByteReader } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const reader = new ByteReader(ReadableStream.from([new Uint8Array([0x51, 0x45, 0x56, 0x4d])]));
 * assert.equal(await reader.readUint32(), 0x5145564d);
 * ```
 *
 * @module
 */
export * from "./lib/bytes/byte_writer.ts";
export * from "./lib/bytes/escape_untrusted_text.ts";
export * from "./lib/bytes/human_units.ts";
export * from "./lib/bytes/is_zero_page.ts";
export * from "./lib/bytes/seeded_random.ts";
export * from "./lib/bytes/uleb128.ts";
export * from "./lib/errors.ts";
export * from "./lib/guest/dirty_bitmap.ts";
export * from "./lib/guest/guest_memory.ts";
export * from "./lib/guest/hosted_guest.ts";
export * from "./lib/guest/migratable_guest.ts";
export * from "./lib/guest/simulated_guest.ts";
export * from "./lib/guest/workload.ts";
export * from "./lib/inspect/analyze_mapped_ram_file.ts";
export * from "./lib/inspect/analyze_migration_stream.ts";
export * from "./lib/inspect/convert_mapped_ram_to_stream.ts";
export * from "./lib/inspect/convert_stream_to_mapped_ram.ts";
export * from "./lib/inspect/format_stream_analysis.ts";
export * from "./lib/mapped_ram/is_mapped_ram_file.ts";
export * from "./lib/mapped_ram/mapped_ram_bitmap.ts";
export * from "./lib/mapped_ram/mapped_ram_encoder_stream.ts";
export * from "./lib/mapped_ram/mapped_ram_layout.ts";
export * from "./lib/mapped_ram/mapped_ram_reader.ts";
export * from "./lib/mapped_ram/mapped_ram_stream_readable.ts";
export * from "./lib/mapped_ram/mapped_ram_writer.ts";
export * from "./lib/mapped_ram/read_mapped_ram_head.ts";
export * from "./lib/mapped_ram/read_mapped_ram_records.ts";
export * from "./lib/migration/destination_auto_recovery.ts";
export * from "./lib/migration/destination_migration.ts";
export * from "./lib/migration/format_progress.ts";
export * from "./lib/migration/guest_device_section.ts";
export * from "./lib/migration/listen_for_migration.ts";
export * from "./lib/migration/migrate_to_uri.ts";
export * from "./lib/migration/migration_info.ts";
export * from "./lib/migration/migration_metrics.ts";
export * from "./lib/migration/migration_parameters.ts";
export * from "./lib/migration/migration_proxy.ts";
export * from "./lib/migration/migration_proxy_info.ts";
export * from "./lib/migration/migration_state.ts";
export * from "./lib/migration/ram_sha256.ts";
export * from "./lib/migration/reencode_stream.ts";
export * from "./lib/migration/source_auto_recovery.ts";
export * from "./lib/migration/source_migration.ts";
export * from "./lib/migration/switchover_decision.ts";
export * from "./lib/postcopy/page_request_queue.ts";
export * from "./lib/postcopy/postcopy_page_source_stream.ts";
export * from "./lib/qmp/check_capability_change.ts";
export * from "./lib/qmp/check_parameter_change.ts";
export * from "./lib/qmp/format_info_migrate.ts";
export * from "./lib/qmp/migration_monitor.ts";
export * from "./lib/qmp/qemu_capabilities.ts";
export * from "./lib/qmp/qemu_commands.ts";
export * from "./lib/qmp/qemu_parameters.ts";
export * from "./lib/qmp/qmp_client.ts";
export * from "./lib/qmp/qmp_command.ts";
export * from "./lib/qmp/qmp_connection_error.ts";
export * from "./lib/qmp/qmp_error.ts";
export * from "./lib/qmp/qmp_json.ts";
export * from "./lib/qmp/qmp_schema.ts";
export * from "./lib/qmp/qmp_server.ts";
export * from "./lib/ram/apply_ram_record.ts";
export * from "./lib/ram/compress_page_stream.ts";
export * from "./lib/ram/dirty_page_scanner.ts";
export * from "./lib/ram/page_encoder_stream.ts";
export * from "./lib/ram/page_source_stream.ts";
export * from "./lib/ram/ram_block_file_name.ts";
export * from "./lib/ram/ram_image.ts";
export * from "./lib/ram/ram_record.ts";
export * from "./lib/ram/xbzrle.ts";
export * from "./lib/ram/xbzrle_cache.ts";
export * from "./lib/ram/xbzrle_page_encoder.ts";
export * from "./lib/streams/byte_counter_stream.ts";
export * from "./lib/streams/byte_reader.ts";
export * from "./lib/streams/clock.ts";
export * from "./lib/streams/rate_limit_stream.ts";
export * from "./lib/transport/exec_command_error.ts";
export * from "./lib/transport/exec_transport.ts";
export * from "./lib/transport/file_transport.ts";
export * from "./lib/transport/huge_page_allocator.ts";
export * from "./lib/transport/listen_options.ts";
export * from "./lib/transport/memory_transport.ts";
export * from "./lib/transport/open_transport.ts";
export * from "./lib/transport/tcp_transport.ts";
export * from "./lib/transport/tls_authz.ts";
export * from "./lib/transport/tls_credentials.ts";
export * from "./lib/transport/tls_transport.ts";
export * from "./lib/transport/transport.ts";
export * from "./lib/transport/transport_error.ts";
export * from "./lib/transport/transport_uri.ts";
export * from "./lib/transport/unix_transport.ts";
export * from "./lib/wire/mapped_ram_header.ts";
export * from "./lib/wire/mig_cmd.ts";
export * from "./lib/wire/migration_decoder.ts";
export * from "./lib/wire/migration_decoder_stream.ts";
export * from "./lib/wire/migration_encoder.ts";
export * from "./lib/wire/migration_encoder_stream.ts";
export * from "./lib/wire/migration_record.ts";
export * from "./lib/wire/migration_stream_kind.ts";
export * from "./lib/wire/multifd_channel_decoder_stream.ts";
export * from "./lib/wire/multifd_channel_encoder_stream.ts";
export * from "./lib/wire/multifd_flags.ts";
export * from "./lib/wire/multifd_initial_packet.ts";
export * from "./lib/wire/multifd_packet.ts";
export * from "./lib/wire/multifd_page_compressor.ts";
export * from "./lib/wire/multifd_page_decompressor.ts";
export * from "./lib/wire/postcopy_package.ts";
export * from "./lib/wire/qemu_vm.ts";
export * from "./lib/wire/ram_block_list.ts";
export * from "./lib/wire/ram_save_flags.ts";
export * from "./lib/wire/return_path_decoder_stream.ts";
export * from "./lib/wire/return_path_message.ts";
export * from "./lib/wire/vmdesc.ts";
