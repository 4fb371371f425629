/** Escapes a value for an XML attribute or text node. */
export function escapeXml(value: string | number | bigint): string {
  return String(value).replace(
    /[<>&'"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[c] as string,
  );
}

/** Reverses escapeXml for a value read back from libvirt's XML. */
export function unescapeXml(value: string): string {
  return value.replace(
    /&(lt|gt|amp|apos|quot);/g,
    (_, name: string) => ({ lt: "<", gt: ">", amp: "&", apos: "'", quot: '"' })[name] as string,
  );
}
