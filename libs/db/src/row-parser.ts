import { z } from 'zod';

/**
 * A row parser compiled from a zod schema: it returns what `schema.parse(row)` would return (the same
 * values, in the same key order), or ASK_ZOD when it cannot tell. ASK_ZOD never means "invalid": zod
 * then gives the parsed value or the issues. zod 3 spends ~2 µs on an eight-column row, a tenth of a
 * list(20) request's CPU; the compiled parser spends a few dozen nanoseconds, and returns the row itself
 * when zod's value would equal it key for key.
 *
 * Only the kinds row schemas are made of compile: scalars, nullable, optional, enums, literals, arrays,
 * records, objects (strict, stripping or passthrough), unions, discriminated unions and z.custom. A
 * schema holding anything else (a string check, a default, a transform, a lazy) gets no compiled
 * parser and is always parsed by zod.
 */
export const ASK_ZOD: unique symbol = Symbol('ask zod');
export type RowParser = (value: unknown) => unknown;

// zod builds objects and records as plain objects; a row's are plain already (pg, JSON.parse).
const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;

const scalar = (accepts: (value: unknown) => boolean): RowParser => (value) => (accepts(value) ? value : ASK_ZOD);

function compile(schema: z.ZodTypeAny): RowParser | undefined {
  if (schema instanceof z.ZodString) return schema._def.checks.length === 0 && !schema._def.coerce ? scalar((value) => typeof value === 'string') : undefined;
  if (schema instanceof z.ZodNumber) {
    const def = schema._def as z.ZodNumberDef;
    if (def.coerce || def.checks.some((check) => check.kind !== 'int' && check.kind !== 'finite')) return undefined;
    const integer = def.checks.some((check) => check.kind === 'int');
    const finite = def.checks.some((check) => check.kind === 'finite');
    // zod 3 reads NaN as its own type, not a number.
    return scalar(
      (value) => typeof value === 'number' && !Number.isNaN(value) && (!integer || Number.isInteger(value)) && (!finite || Number.isFinite(value)),
    );
  }
  if (schema instanceof z.ZodBoolean) return schema._def.coerce ? undefined : scalar((value) => typeof value === 'boolean');
  if (schema instanceof z.ZodNull) return scalar((value) => value === null);
  if (schema instanceof z.ZodAny || schema instanceof z.ZodUnknown) return (value) => value;
  if (schema instanceof z.ZodLiteral) {
    const literal: unknown = schema._def.value;
    return scalar((value) => value === literal);
  }
  if (schema instanceof z.ZodEnum) {
    const options = new Set<unknown>(schema._def.values as readonly string[]);
    return scalar((value) => typeof value === 'string' && options.has(value));
  }
  if (schema instanceof z.ZodNullable) {
    const inner = compile(schema._def.innerType as z.ZodTypeAny);
    return inner && ((value) => (value === null ? null : inner(value)));
  }
  if (schema instanceof z.ZodOptional) {
    const inner = compile(schema._def.innerType as z.ZodTypeAny);
    return inner && ((value) => (value === undefined ? undefined : inner(value)));
  }
  if (schema instanceof z.ZodArray) {
    const def = schema._def as z.ZodArrayDef;
    const element = compile(def.type);
    if (!element || def.minLength || def.maxLength || def.exactLength) return undefined;
    return (value) => {
      if (!Array.isArray(value)) return ASK_ZOD;
      let output: unknown[] | undefined;
      for (let k = 0; k < value.length; k++) {
        const member = element(value[k]);
        if (member === ASK_ZOD) return ASK_ZOD;
        if (member !== value[k]) (output ??= value.slice())[k] = member;
      }
      return output ?? value;
    };
  }
  if (schema instanceof z.ZodRecord) {
    const def = schema._def as z.ZodRecordDef;
    const keyIsPlainString = def.keyType instanceof z.ZodString && def.keyType._def.checks.length === 0;
    const element = compile(def.valueType);
    if (!keyIsPlainString || !element) return undefined;
    return (value) => {
      // zod drops an own "__proto__" key; a plain object has no inherited keys for zod's for…in to find.
      if (!isPlainObject(value) || Object.hasOwn(value, '__proto__')) return ASK_ZOD;
      let output: Record<string, unknown> | undefined;
      for (const key in value) {
        const member = element(value[key]);
        if (member === ASK_ZOD) return ASK_ZOD;
        if (member !== value[key]) (output ??= { ...value })[key] = member;
      }
      return output ?? value;
    };
  }
  if (schema instanceof z.ZodObject) return compileObject(schema);
  if (schema instanceof z.ZodUnion) {
    // zod returns the first option that parses. ASK_ZOD from an option does not always mean that option
    // fails (a stricter check, say), so every option but the last must be a scalar whose parser answers
    // ASK_ZOD exactly when zod fails.
    const options = schema._def.options as z.ZodTypeAny[];
    const parsers = options.map(compile);
    if (!parsers.every((parser): parser is RowParser => parser !== undefined)) return undefined;
    if (!options.slice(0, -1).every(failsExactlyWithZod)) return undefined;
    return (value) => {
      for (const parser of parsers) {
        const parsed = parser(value);
        if (parsed !== ASK_ZOD) return parsed;
      }
      return ASK_ZOD;
    };
  }
  if (schema instanceof z.ZodDiscriminatedUnion) {
    // zod parses with the one option the discriminator names.
    const discriminator = schema._def.discriminator as string;
    const byValue = new Map<unknown, RowParser>();
    for (const [value, option] of schema._def.optionsMap as Map<unknown, z.ZodTypeAny>) {
      const parser = compile(option);
      if (!parser) return undefined;
      byValue.set(value, parser);
    }
    return (value) => {
      if (!isPlainObject(value)) return ASK_ZOD;
      const parser = byValue.get(value[discriminator]);
      return parser ? parser(value) : ASK_ZOD;
    };
  }
  if (schema instanceof z.ZodEffects) {
    // z.custom: a refinement over z.any, which returns the value itself when the refinement holds.
    const def = schema._def as z.ZodEffectsDef;
    const overAny = def.schema instanceof z.ZodAny || def.schema instanceof z.ZodUnknown;
    return def.effect.type === 'refinement' && overAny ? (value) => (schema.safeParse(value).success ? value : ASK_ZOD) : undefined;
  }
  return undefined;
}

/**
 * zod's object value: the shape's keys in the shape's order (a missing optional one left out), then, for
 * a passthrough object, the row's other keys in the row's order. A strict object refuses other keys; a
 * stripping one drops them. The row itself comes back when it already is that value.
 */
function compileObject(schema: z.AnyZodObject): RowParser | undefined {
  const def = schema._def as z.ZodObjectDef;
  if (!(def.catchall instanceof z.ZodNever)) return undefined;
  const fields: Array<[string, RowParser]> = [];
  for (const [key, field] of Object.entries(schema.shape as Record<string, z.ZodTypeAny>)) {
    const parser = compile(field);
    if (!parser) return undefined;
    fields.push([key, parser]);
  }
  const known = new Set(fields.map(([key]) => key));
  const unknownKeys = def.unknownKeys;
  return (value) => {
    if (!isPlainObject(value)) return ASK_ZOD;
    const keys = Object.keys(value);
    // The usual row: its columns in the shape's order, each already what zod returns. Then it is returned itself.
    let asIs = keys.length === fields.length;
    for (let k = 0; k < fields.length; k++) {
      const [key, parser] = fields[k]!;
      const field = value[key];
      const parsed = parser(field);
      if (parsed === ASK_ZOD) return ASK_ZOD;
      if (asIs && (keys[k] !== key || parsed !== field)) asIs = false;
    }
    if (asIs) return value;
    const others = keys.filter((key) => !known.has(key));
    // zod drops an own "__proto__" key even when it keeps the others.
    if (others.length > 0 && (unknownKeys === 'strict' || others.includes('__proto__'))) return ASK_ZOD;
    const output: Record<string, unknown> = {};
    for (const [key, parser] of fields) {
      // zod keeps a key the row has, even when undefined, and leaves out one it lacks.
      const parsed = parser(value[key]);
      if (parsed !== undefined || key in value) output[key] = parsed;
    }
    if (unknownKeys === 'passthrough') for (const key of others) output[key] = value[key];
    return output;
  };
}

/** Scalars: their parser answers ASK_ZOD exactly when zod's parse fails. */
function failsExactlyWithZod(schema: z.ZodTypeAny): boolean {
  if (schema instanceof z.ZodNullable || schema instanceof z.ZodOptional) return failsExactlyWithZod(schema._def.innerType as z.ZodTypeAny);
  const isScalar =
    schema instanceof z.ZodString ||
    schema instanceof z.ZodNumber ||
    schema instanceof z.ZodBoolean ||
    schema instanceof z.ZodNull ||
    schema instanceof z.ZodLiteral ||
    schema instanceof z.ZodEnum;
  return isScalar && compile(schema) !== undefined;
}

const compiled = new WeakMap<z.ZodTypeAny, RowParser | null>();

/** The compiled parser for a schema (cached per schema), or undefined when zod must parse every row. */
export function rowParserFor(schema: z.ZodTypeAny): RowParser | undefined {
  let parser = compiled.get(schema);
  if (parser === undefined) {
    parser = compile(schema) ?? null;
    compiled.set(schema, parser);
  }
  return parser ?? undefined;
}
