// A zone's S3-compatible object store for volume snapshots (Zone spec.secondaryStorage.s3), through
// the AWS SDK: a snapshot's file is uploaded in parts, each part checksummed by the SDK and checked
// by the store, with the whole file's sha256 kept as the object's metadata; a download is checked
// against the sha256 the snapshot's status recorded before any disk is made from it. The agent
// signs with its own credentials (the SDK's usual sources), never stored in the API.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { Readable } from "node:stream";
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import type { Zone } from "../crds/index.ts";
import { writeVerified } from "./images.ts";
import { HostProblem } from "./problem.ts";

export type S3Config = NonNullable<NonNullable<Zone["spec"]["secondaryStorage"]>["s3"]>;

/** Where a snapshot's object is: the store's URL, its bucket, the key. */
export interface StoreObject {
  endpoint: string;
  bucket: string;
  key: string;
}

export interface SnapshotStore {
  /** Uploads `file`, whose sha256 is known, and checks the store holds all of its bytes. */
  upload(store: S3Config, key: string, file: string, sha256: string): Promise<StoreObject>;
  /** Downloads the object to `file` and checks it against `sha256`; a mismatch leaves no file. */
  download(object: StoreObject, file: string, sha256: string, region?: string): Promise<void>;
  /** Removes the object; one already gone is fine. */
  remove(object: StoreObject, region?: string): Promise<void>;
}

/** Parts of 64 MiB, two in flight: a few hundred MiB of memory at most, whatever the disk's size. */
const PART_BYTES = 64 * 2 ** 20;

export class S3SnapshotStore implements SnapshotStore {
  private readonly clients = new Map<string, S3Client>();

  private client(endpoint: string, region: string | undefined): S3Client {
    const id = `${endpoint}|${region ?? ""}`;
    let client = this.clients.get(id);
    if (!client) {
      client = new S3Client({
        endpoint,
        region: region ?? "us-east-1",
        // Path-style requests: what every S3-compatible store answers (MinIO, Ceph RGW, Garage).
        forcePathStyle: true,
        maxAttempts: 5,
      });
      this.clients.set(id, client);
    }
    return client;
  }

  async upload(store: S3Config, key: string, file: string, sha256: string): Promise<StoreObject> {
    const client = this.client(store.endpoint, store.region);
    const bytes = (await stat(file)).size;
    await new Upload({
      client,
      params: {
        Bucket: store.bucket,
        Key: key,
        Body: createReadStream(file),
        ContentType: "application/octet-stream",
        ChecksumAlgorithm: "SHA256",
        Metadata: { sha256 },
      },
      partSize: PART_BYTES,
      queueSize: 2,
    })
      .done()
      .catch((error: unknown) => {
        throw storeProblem("upload", store.bucket, key, error);
      });
    const head = await client
      .send(new HeadObjectCommand({ Bucket: store.bucket, Key: key }))
      .catch((error: unknown) => {
        throw storeProblem("check", store.bucket, key, error);
      });
    if (head.ContentLength !== bytes || head.Metadata?.sha256 !== sha256)
      throw new HostProblem(
        "SnapshotUploadIncomplete",
        `The store holds ${head.ContentLength} bytes of s3://${store.bucket}/${key}, not the ${bytes} uploaded.`,
      );
    return { endpoint: store.endpoint, bucket: store.bucket, key };
  }

  async download(object: StoreObject, file: string, sha256: string, region?: string): Promise<void> {
    const client = this.client(object.endpoint, region);
    const answer = await client
      .send(new GetObjectCommand({ Bucket: object.bucket, Key: object.key }))
      .catch((error: unknown) => {
        throw storeProblem("download", object.bucket, object.key, error);
      });
    await writeVerified(answer.Body as Readable, file, {
      mode: 0o600,
      expect: {
        sha256,
        mismatch: (actual) =>
          new HostProblem(
            "SnapshotChecksumMismatch",
            `s3://${object.bucket}/${object.key} has sha256 ${actual}, not the ${sha256} recorded when it was taken: it is not used.`,
          ),
      },
    }).catch((error: unknown) => {
      throw error instanceof HostProblem ? error : storeProblem("download", object.bucket, object.key, error);
    });
  }

  async remove(object: StoreObject, region?: string): Promise<void> {
    // Deletes are idempotent in S3: a key already gone answers as a removed one, and no object is
    // left in a bucket that does not exist.
    await this.client(object.endpoint, region)
      .send(new DeleteObjectCommand({ Bucket: object.bucket, Key: object.key }))
      .catch((error: unknown) => {
        if (error instanceof Error && error.name === "NoSuchBucket") return;
        throw storeProblem("remove", object.bucket, object.key, error);
      });
  }
}

function storeProblem(action: string, bucket: string, key: string, error: unknown): HostProblem {
  const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new HostProblem("SnapshotStoreFailed", `Could not ${action} s3://${bucket}/${key}: ${detail}`);
}
