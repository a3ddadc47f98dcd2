/** Quotes one word for /bin/sh (single quotes; embedded quotes escaped). */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}
