/** The CLI's own version (`fleet version`, User-Agent). */
export const CLI_VERSION = '0.1.0';
