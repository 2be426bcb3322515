/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Stable MESSAGE_IDs of dmbyok's journal entries (dmbyok_log_struct, dmbyok/log.h), so
 * operators and their tooling can select events without parsing text:
 *
 *     journalctl MESSAGE_ID=5cadab24117643a3847d8b1a8c0782a0 KEY_ARN=arn:aws:kms:...
 *     journalctl -o json MESSAGE_ID=903cc70694fa49328deef32a7c360369 VOLUME=orders
 *
 * Each id was generated once (systemd-id128 new) and never changes meaning; a new event
 * gets a new id. The fields each event carries are listed with it; a volume-set event
 * repeats VOLUME= once per volume (journald keeps repeated fields and matches any of them).
 * catalog/dmbyok.catalog holds the same documentation for `journalctl -x`.
 *
 * Common fields: KEY_ARN (the customer key), VOLUME (a mapping name), CLASS (the error
 * class, dmbyok_error_class_name()), ERRNO (numeric, on failures), plus journald's own.
 */

/*
 * A customer key is unusable for this host: disabled, pending deletion, its grant or policy
 * withdrawn, or not the key that wrapped the volume. The agent confirmed it (see its
 * --revoke-confirmations) and is about to lock the key's volumes.
 * Fields: KEY_ARN, CLASS=key-revoked, DETAIL (the KMS's own words), VOLUME...
 */
#define DMBYOK_MESSAGE_KEY_REVOKED "ad1a77d95afc45c0b448ede80c98c012"

/*
 * Volumes were locked: I/O frozen, dm-crypt suspended, the key wiped from kernel memory.
 * Nothing is lost; they resume on unlock. Fields: KEY_ARN, VOLUME..., REASON (key-revoked,
 * fail-closed, operator).
 */
#define DMBYOK_MESSAGE_VOLUMES_LOCKED "903cc70694fa49328deef32a7c360369"

/*
 * Locked volumes were torn down (their mappings removed) after staying locked too long.
 * The data stays on disk, encrypted; `dmbyok open` brings a volume back once its key is
 * usable. Fields: KEY_ARN, VOLUME..., LOCKED_FOR_S.
 */
#define DMBYOK_MESSAGE_TORN_DOWN "e0972e117d114e2198b18902e1a71aaf"

/*
 * The key answered again and its volumes were restored: locked ones unlocked (I/O resumed),
 * torn-down ones re-provisioned. Fields: KEY_ARN, VOLUME..., ACTION (unlocked or
 * reprovisioned), DOWN_FOR_MS.
 */
#define DMBYOK_MESSAGE_RESTORED "02048f211d7f41dbae27e41e81848f6c"

/*
 * A volume's data key was re-wrapped under another customer key (ReEncrypt; the plaintext
 * never left the KMS), e.g. after its alias moved. Fields: VOLUME, KEY_ARN (the new key),
 * OLD_KEY_ARN.
 */
#define DMBYOK_MESSAGE_REWRAPPED "b26346120aca4aaa8e9f50e4ef733a8b"

/*
 * The KMS cannot be reached (network, timeouts, 5xx, throttling after retries). Nothing is
 * locked for that unless --fail-closed-after says so. Fields: KEY_ARN, CLASS, DETAIL,
 * DOWN_FOR_MS.
 */
#define DMBYOK_MESSAGE_KMS_UNREACHABLE "033796cf9ad74faf9bed1ac85a40b1b8"

/*
 * This host's own KMS credentials fail (expired, rejected, none found): a fault on the host,
 * not a revocation by the customer, so nothing is locked for it. Fix the credentials (see
 * docs/credentials.md). Fields: KEY_ARN, CLASS=credentials, DETAIL.
 */
#define DMBYOK_MESSAGE_CREDENTIALS_BROKEN "848682d3fe2d4cb6ab21677637d3dde1"

/*
 * One KMS operation, as this host saw it: the host-side counterpart of the KMS's own audit
 * trail (AWS CloudTrail), one entry per call however many HTTP attempts it took. Info
 * priority in the journal; debug level on stderr. Never carries key material.
 * Fields: OPERATION (Decrypt, GenerateDataKey, ReEncrypt, DescribeKey), PROVIDER, REGION,
 * KEY_ID (as asked; absent when the blob names its key), KEY_ARN (as answered),
 * ENCRYPTION_CONTEXT (canonical JSON: sorted keys, compact), RESULT (ok or the error class),
 * ERRNO (on failure), LATENCY_MS (all attempts), REQUEST_ID (the KMS's, of the last attempt:
 * AWS's x-amzn-RequestId, the key to CloudTrail's requestID).
 */
#define DMBYOK_MESSAGE_KMS_CALL "5cadab24117643a3847d8b1a8c0782a0"

/*
 * A customer key no longer exists (deleted after its waiting period): its volumes can never
 * be unlocked again. Fields: KEY_ARN, VOLUME...
 */
#define DMBYOK_MESSAGE_KEY_DELETED "dc7d5522adae43db8d696f5b4475096d"

/*
 * dmbyokd started and adopted the host's dmbyok mappings. Fields: KEYS (keys watched),
 * VOLUMES (mappings adopted), VERSION.
 */
#define DMBYOK_MESSAGE_AGENT_STARTED "1aae6721edbd463b8b1c5a328fcf117f"

/*
 * A volume was shredded (dmbyok shred): both LUKS2 header copies and the keyslot area were
 * overwritten with zeros on the disk, so its data key is unrecoverable, whatever becomes of
 * the customer key. Fields: DEVICE, HEADER (a detached header file), VOLUME_UUID (the
 * LUKS2 UUID), KEY_ARN (the key that wrapped the data key), WIPED... (one per byte range:
 * "PATH OFFSET+LENGTH WHAT", in bytes), DAMAGED=1 (the header no longer loaded: --force),
 * VOLUME... (torn-down mappings of the device that were forgotten).
 * Documented in catalog/dmbyok.catalog.
 */
#define DMBYOK_MESSAGE_SHREDDED "e9a4d71a148a45a2ac2b86df793bc14a"

/*
 * dmbyokd (policy-data-paths) found a file system mounted at or under a data path from
 * storage that is not a dmbyok volume: data there is not under the customer's key. Fields:
 * DATA_PATH, MOUNT_POINT, SOURCE, STATUS (violation, or unknown for what cannot be
 * proven). With policy-unmount a violation is then unmounted. Documented in
 * catalog/dmbyok.catalog.
 */
#define DMBYOK_MESSAGE_POLICY_VIOLATED "08a0a9d3074f44359ee2b86d94de0e25"
