import { testDocExamples } from '../helpers/doc-examples.ts';

testDocExamples('README.md', 1);
