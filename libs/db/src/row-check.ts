import { z } from 'zod';

/**
 * A row check compiled from a zod schema: true only when `schema.safeParse(row)` would succeed and
 * return a value deep-equal to the row, so the row can be used as it is. False means "ask zod", never
 * "invalid": zod then gives the parsed value or the issues. zod 3 spends ~2 µs on an eight-column
 * row, a tenth of a list(20) request's CPU; the compiled check spends a few dozen nanoseconds.
 *
 * Only the kinds row schemas are made of compile: scalars, nullable, optional, enums, literals, arrays,
 * records, objects (strict, stripping or passthrough), unions, discriminated unions and refinements. A schema holding anything
 * else (a string check, a default, a transform, a lazy) gets no compiled check and is always parsed by zod.
 */
export type RowCheck = (value: unknown) => boolean;

// zod builds objects and records as plain objects; a row's are plain already (pg, JSON.parse).
const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;

// zod's object and record parsers drop an own "__proto__" key, so a row holding one is not returned as it is.
const hasProtoKey = (value: object) => Object.prototype.hasOwnProperty.call(value, '__proto__');

function compile(schema: z.ZodTypeAny): RowCheck | undefined {
  if (schema instanceof z.ZodString) return schema._def.checks.length === 0 && !schema._def.coerce ? (value) => typeof value === 'string' : undefined;
  if (schema instanceof z.ZodNumber) {
    const def = schema._def as z.ZodNumberDef;
    if (def.coerce || def.checks.some((check) => check.kind !== 'int' && check.kind !== 'finite')) return undefined;
    const integer = def.checks.some((check) => check.kind === 'int');
    const finite = def.checks.some((check) => check.kind === 'finite');
    // zod 3 reads NaN as its own type, not a number.
    return (value) =>
      typeof value === 'number' && !Number.isNaN(value) && (!integer || Number.isInteger(value)) && (!finite || Number.isFinite(value));
  }
  if (schema instanceof z.ZodBoolean) return schema._def.coerce ? undefined : (value) => typeof value === 'boolean';
  if (schema instanceof z.ZodNull) return (value) => value === null;
  if (schema instanceof z.ZodAny || schema instanceof z.ZodUnknown) return () => true;
  if (schema instanceof z.ZodLiteral) {
    const literal: unknown = schema._def.value;
    return (value) => value === literal;
  }
  if (schema instanceof z.ZodEnum) {
    const options = new Set<unknown>(schema._def.values as readonly string[]);
    return (value) => typeof value === 'string' && options.has(value);
  }
  if (schema instanceof z.ZodNullable) {
    const inner = compile(schema._def.innerType as z.ZodTypeAny);
    return inner && ((value) => value === null || inner(value));
  }
  if (schema instanceof z.ZodOptional) {
    const inner = compile(schema._def.innerType as z.ZodTypeAny);
    return inner && ((value) => value === undefined || inner(value));
  }
  if (schema instanceof z.ZodArray) {
    const def = schema._def as z.ZodArrayDef;
    const element = compile(def.type);
    if (!element || def.minLength || def.maxLength || def.exactLength) return undefined;
    return (value) => Array.isArray(value) && value.every((member) => element(member));
  }
  if (schema instanceof z.ZodRecord) {
    const def = schema._def as z.ZodRecordDef;
    const keyIsPlainString = def.keyType instanceof z.ZodString && def.keyType._def.checks.length === 0;
    const element = compile(def.valueType);
    if (!keyIsPlainString || !element) return undefined;
    return (value) => {
      if (!isPlainObject(value) || hasProtoKey(value)) return false;
      // zod walks for…in, inherited enumerable keys included; a plain object has none but its own.
      for (const key in value) if (!element(value[key])) return false;
      return true;
    };
  }
  if (schema instanceof z.ZodObject) {
    const def = schema._def as z.ZodObjectDef;
    if (!(def.catchall instanceof z.ZodNever)) return undefined;
    const fields: Array<[string, RowCheck]> = [];
    for (const [key, field] of Object.entries(schema.shape as Record<string, z.ZodTypeAny>)) {
      const check = compile(field);
      if (!check) return undefined;
      fields.push([key, check]);
    }
    // A strict object rejects other keys and a stripping one drops them; a passthrough one keeps them.
    const othersKept = def.unknownKeys === 'passthrough';
    // zod builds its output in the shape's key order, the kept others after: a row in another order
    // would come back reordered (and serialise differently), so it goes to zod too.
    return (value) => {
      if (!isPlainObject(value)) return false;
      const keys = Object.keys(value);
      let next = 0;
      for (const [key, check] of fields) {
        if (!check(value[key])) return false;
        if (keys[next] === key) next++;
        else if (key in value) return false;
      }
      if (next === keys.length) return true;
      return othersKept && !hasProtoKey(value);
    };
  }
  if (schema instanceof z.ZodUnion) {
    // zod returns the first option that parses. A check that passes means its option parses, but a
    // check that fails may not mean its option fails (a stricter check, a stripped key); so every
    // option but the last must be one whose check fails exactly when zod fails.
    const options = schema._def.options as z.ZodTypeAny[];
    const checks = options.map(compile);
    if (!checks.every((check): check is RowCheck => check !== undefined)) return undefined;
    if (!options.slice(0, -1).every(failsExactlyWithZod)) return undefined;
    return (value) => checks.some((check) => check(value));
  }
  if (schema instanceof z.ZodDiscriminatedUnion) {
    // zod parses with the one option the discriminator names.
    const discriminator = schema._def.discriminator as string;
    const byValue = new Map<unknown, RowCheck>();
    for (const [value, option] of schema._def.optionsMap as Map<unknown, z.ZodTypeAny>) {
      const check = compile(option);
      if (!check) return undefined;
      byValue.set(value, check);
    }
    return (value) => {
      if (!isPlainObject(value)) return false;
      const check = byValue.get(value[discriminator]);
      return check !== undefined && check(value);
    };
  }
  if (schema instanceof z.ZodEffects) {
    // A refinement (z.custom, .refine) returns its inner value unchanged when it holds.
    const def = schema._def as z.ZodEffectsDef;
    const inner = def.effect.type === 'refinement' ? compile(def.schema) : undefined;
    return inner && ((value) => inner(value) && schema.safeParse(value).success);
  }
  return undefined;
}

/** Scalars: their compiled check fails exactly when zod's parse does. */
function failsExactlyWithZod(schema: z.ZodTypeAny): boolean {
  if (schema instanceof z.ZodNullable || schema instanceof z.ZodOptional) return failsExactlyWithZod(schema._def.innerType as z.ZodTypeAny);
  const scalar =
    schema instanceof z.ZodString ||
    schema instanceof z.ZodNumber ||
    schema instanceof z.ZodBoolean ||
    schema instanceof z.ZodNull ||
    schema instanceof z.ZodLiteral ||
    schema instanceof z.ZodEnum;
  return scalar && compile(schema) !== undefined;
}

const compiled = new WeakMap<z.ZodTypeAny, RowCheck | null>();

/** The compiled check for a schema (cached per schema), or undefined when zod must parse every row. */
export function rowCheckFor(schema: z.ZodTypeAny): RowCheck | undefined {
  let check = compiled.get(schema);
  if (check === undefined) {
    check = compile(schema) ?? null;
    compiled.set(schema, check);
  }
  return check ?? undefined;
}
