/** SSG's version, printed by `ssg --version` and written into the Received header. */
export const VERSION = "0.1.0";
