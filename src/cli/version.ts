/** The version vmvault reports (`vmvault --version`, the API's health route). */
export const VERSION = '0.1.0';
